"""``python -m streamlab.scenario run FILE --server URL --player-id ID [--wait]``."""

import sys

from streamlab.scenario.cli import main

sys.exit(main())

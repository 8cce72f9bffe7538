"""The daemon-log check of the integration fixtures (streamlab.testing.daemon.log_problems)."""

from __future__ import annotations

from streamlab.testing.daemon import log_problems

LOG = """\
2026-12-03T17:59:03+0000 [-] QuietSite (TLS) starting on 34127
2026-12-03T17:59:04+0000 [twisted.internet.defer#critical] Unhandled error in Deferred:
2026-12-03T17:59:04+0000 [twisted.internet.defer#critical]
\tTraceback (most recent call last):
\t  File "x.py", line 1, in f
\tAttributeError: 'NoneType' object has no attribute 'unregisterProducer'
2026-12-03T17:59:05+0000 [streamlab.proxy.listener#info] fine
2026-12-03T17:59:06+0000 [-] Unhandled Error
\tTraceback (most recent call last):
\tValueError: boom
"""


def test_log_problems_finds_unhandled_errors_and_tracebacks_with_their_lines():
    blocks = log_problems(LOG, allow=[])
    assert len(blocks) == 2
    assert "Unhandled error in Deferred" in blocks[0]
    assert "unregisterProducer" in blocks[0] and "fine" not in blocks[0]
    assert blocks[1].startswith("2026-12-03T17:59:06") and blocks[1].endswith("ValueError: boom")


def test_allow_list_drops_only_the_block_with_the_exact_message():
    blocks = log_problems(LOG, allow=[("'NoneType' object has no attribute 'unregisterProducer'", "x")])
    assert len(blocks) == 1 and "boom" in blocks[0]


def test_clean_log_has_no_problems():
    assert log_problems("2026-12-03T17:59:03+0000 [-] started\n", allow=[]) == []

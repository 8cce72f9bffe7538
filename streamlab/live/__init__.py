"""streamlab.live."""

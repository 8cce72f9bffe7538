"""streamlab: looping-live origin, per-player fault proxy and encoder for player QA."""

__version__ = "0.1.0"

"""streamlab.web."""

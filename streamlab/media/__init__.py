"""streamlab.media."""

"""streamlab.uploads."""

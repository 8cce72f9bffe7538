"""streamlab.proxy."""

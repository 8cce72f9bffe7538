"""streamlab.api."""

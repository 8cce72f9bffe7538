"""streamlab.storage."""

"""streamlab.shaping."""

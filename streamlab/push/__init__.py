"""streamlab.push."""

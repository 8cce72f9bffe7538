"""streamlab.testing."""

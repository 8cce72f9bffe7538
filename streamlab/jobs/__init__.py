"""streamlab.jobs."""

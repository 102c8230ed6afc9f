"""functions._shared: plumbing shared by the edge-function handlers."""

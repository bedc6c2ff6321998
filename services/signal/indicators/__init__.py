"""Technical indicators, each in a batch (numpy) and an incremental (live) form that agree exactly."""

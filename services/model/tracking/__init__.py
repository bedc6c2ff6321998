"""Live tracking: how recorded predictions did (performance.py) and the drift episodes it opens (service.py)."""

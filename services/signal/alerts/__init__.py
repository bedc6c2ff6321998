"""Alert rules: their storage and encoding (the use cases are in services/signal/service/alerts.py)."""

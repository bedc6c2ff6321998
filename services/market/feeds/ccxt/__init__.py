"""A feed of real crypto exchanges through ccxt: the adapter (feed.py), its request pacing and trade cursors
(pacing.py), and ccxt's values in platform terms (conversions.py)."""

"""The embedded market simulator ("sim"): the feed (feed.py), its instruments (symbols.py) and its price model
(paths.py)."""

from services.market.feeds.sim.feed import SimulatedFeed

__all__ = ["SimulatedFeed"]

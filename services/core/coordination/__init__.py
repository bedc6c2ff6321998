"""Cache, pub-sub, locks with fencing tokens, leader election and rate limits, on Redis or in memory."""

from services.core.coordination.base import (
    Backend,
    Cache,
    Decision,
    Holder,
    Lease,
    Locks,
    Message,
    PubSub,
    RateLimiter,
)
from services.core.coordination.bundle import Coordination, Health
from services.core.coordination.factory import build_backend, build_coordination, keyspace_for
from services.core.coordination.keys import KeySpace
from services.core.coordination.leader import LeaderElection, run_as_leader
from services.core.coordination.memory import MemoryBackend
from services.core.coordination.redis_backend import RedisBackend
from services.core.coordination.redis_connection import RedisOptions
from services.core.coordination.subscription import Subscription

__all__ = [
    "Backend",
    "Cache",
    "Coordination",
    "Decision",
    "Health",
    "Holder",
    "KeySpace",
    "LeaderElection",
    "Lease",
    "Locks",
    "MemoryBackend",
    "Message",
    "PubSub",
    "RateLimiter",
    "RedisBackend",
    "RedisOptions",
    "Subscription",
    "build_backend",
    "build_coordination",
    "keyspace_for",
    "run_as_leader",
]

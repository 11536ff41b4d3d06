"""A client of prewarm: the agent's ``ensure`` API and the coordinator's event API.

>>> from prewarm import Agent
>>> with Agent("http://127.0.0.1:7200").holding("models/demo", timeout=60) as state:  # doctest: +SKIP
...     print(state.path, state.version)
"""

from .agent import Agent, State
from .coordinator import Coordinator, Event, Outcome, Placement, Transfer
from .errors import (
    BadRequest,
    CacheFull,
    ConnectionFailed,
    Forbidden,
    InvalidResource,
    NoSource,
    Overloaded,
    RateLimited,
    NotFound,
    NotReady,
    PayloadTooLarge,
    PrewarmError,
    RequestTimeout,
    SourceError,
    Unauthorized,
    UnknownLease,
    UnknownState,
)

__all__ = [
    "Agent",
    "State",
    "Coordinator",
    "Event",
    "Outcome",
    "Placement",
    "Transfer",
    "PrewarmError",
    "ConnectionFailed",
    "BadRequest",
    "InvalidResource",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "UnknownState",
    "UnknownLease",
    "RequestTimeout",
    "PayloadTooLarge",
    "SourceError",
    "NoSource",
    "Overloaded",
    "RateLimited",
    "NotReady",
    "CacheFull",
]

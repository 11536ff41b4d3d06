"""The coordinator's JSON API: post events (predicted, placed, prefetched) and ask placement."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from ._http import Http, tls_context


@dataclass
class Event:
    """An event that starts an execution (``POST /v1/events``)."""

    #: The sequence key: session, tenant, client or app (predictions are made per key).
    key: str
    #: Event type: ``http``, ``upload``, ``timer``…
    type: str = "http"
    #: States the event names as needed (fetched for certain).
    needs: List[str] = field(default_factory=list)
    #: Anything else the source knew.
    attrs: Dict[str, Any] = field(default_factory=dict)
    #: The capacity that will run it, when the sender knows.
    capacity: Optional[str] = None
    #: When it happened, Unix seconds (default: on arrival).
    ts: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        """The wire form: ``{"event": {type, key, attrs, needs}, "capacity", "ts"}``."""
        event: Dict[str, Any] = {"type": self.type, "key": self.key}
        if self.attrs:
            event["attrs"] = self.attrs
        if self.needs:
            event["needs"] = list(self.needs)
        doc: Dict[str, Any] = {"event": event}
        if self.capacity is not None:
            doc["capacity"] = self.capacity
        if self.ts is not None:
            doc["ts"] = self.ts
        return doc


@dataclass(frozen=True)
class Placement:
    """Where an execution should run."""

    capacity: str
    #: Why: ``named``, ``holds``, ``home``…
    reason: str
    #: Predicted probability mass the capacity already holds.
    held_probability: float


@dataclass(frozen=True)
class Transfer:
    """A predictive transfer the coordinator requested."""

    resource: str
    version: int
    bytes: int
    probability: float
    #: Expected seconds of cold start saved, net.
    score: float


@dataclass(frozen=True)
class Outcome:
    """What the coordinator did (or, for :meth:`Coordinator.placement`, would do)."""

    #: ``None`` when no capacity is attached.
    placement: Optional[Placement]
    transfers: List[Transfer]

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Outcome":
        """The outcome of one event in an answer."""
        p = doc.get("placement")
        return cls(
            placement=Placement(p["capacity"], p["reason"], float(p["held_probability"]))
            if p
            else None,
            transfers=[
                Transfer(t["resource"], int(t["version"]), int(t["bytes"]),
                         float(t["probability"]), float(t["score"]))
                for t in doc.get("transfers", [])
            ],
        )


class Coordinator:
    """A client of a coordinator's HTTP routes (on its gRPC port, ``--listen``).

    Over TLS (``--tls-cert``): an ``https://`` URL, ``ca``, and ``cert``/``key`` where the
    coordinator requires client certificates, as for :class:`prewarm.Agent`.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:7100",
        token: Optional[str] = None,
        *,
        ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
    ) -> None:
        self._http = Http(url, token, tls_context(ca, cert, key))

    @property
    def url(self) -> str:
        """The coordinator's base URL."""
        return self._http.url

    def post_events(self, events: Sequence[Union[Event, Dict[str, Any]]]) -> List[Outcome]:
        """Posts ``events`` (taken whole or refused whole) and returns each one's outcome.

        An item is an :class:`Event` or its wire form as a dict. Raises
        :class:`~prewarm.errors.BadRequest` for a malformed event and
        :class:`~prewarm.errors.PayloadTooLarge` beyond 10,000 events or 4 MiB.
        """
        body = [e.to_json() if isinstance(e, Event) else e for e in events]
        return [Outcome.from_json(o) for o in self._http.call("POST", "/v1/events", body)]

    def placement(
        self, key: str, type: Optional[str] = None, capacity: Optional[str] = None
    ) -> Outcome:
        """Where an event of ``key`` (and ``type``) would run and what would move; moves
        nothing."""
        params = {"key": key}
        if type is not None:
            params["type"] = type
        if capacity is not None:
            params["capacity"] = capacity
        path = "/v1/placement?" + urllib.parse.urlencode(params)
        return Outcome.from_json(self._http.call("GET", path))

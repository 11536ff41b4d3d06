"""The agent's application API: ``ensure`` a state, renew or release its lease, inventory."""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

from ._http import Http, tls_context
from .errors import PrewarmError, UnknownLease

log = logging.getLogger("prewarm")

#: Seconds, or a :class:`datetime.timedelta`.
Duration = Union[float, int, timedelta]

#: Seconds a call may take beyond the ``ensure`` timeout before the socket gives up.
_SLACK = 10.0
#: The agent's default ``ensure`` timeout (``timeout_ms``), seconds.
_DEFAULT_TIMEOUT = 30.0


def _ms(d: Duration) -> int:
    """``d`` in whole milliseconds."""
    seconds = d.total_seconds() if isinstance(d, timedelta) else float(d)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {d!r}")
    return int(round(seconds * 1000))


@dataclass(frozen=True)
class State:
    """An installed state version, as ``ensure`` answered."""

    #: The resource id.
    resource: str
    #: The version installed.
    version: int
    #: Where to read it (a directory or a file, as snapshotted).
    path: Path
    #: Whether it was already installed.
    hit: bool
    #: Milliseconds the call waited.
    wait_ms: int
    #: The lease keeping it from eviction (``None`` if it could not be leased).
    lease: Optional[int]
    #: How long the lease lasts from the answer, milliseconds.
    lease_ms: int
    #: On a miss, why the state was not there ("never fetched here", "v1 was evicted …").
    miss_reason: Optional[str] = None

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "State":
        """The state of an ``ensure`` answer."""
        return cls(
            resource=doc["resource"],
            version=int(doc["version"]),
            path=Path(doc["path"]),
            hit=bool(doc["hit"]),
            wait_ms=int(doc["wait_ms"]),
            lease=doc.get("lease"),
            lease_ms=int(doc.get("lease_ms", 0)),
            miss_reason=doc.get("miss_reason"),
        )


class Agent:
    """A client of one agent's application API (``prewarm agent --listen``).

    ``token`` is the shared bearer token (required by agents on non-loopback addresses).
    For an agent serving TLS (``--tls-cert``) give an ``https://`` URL and ``ca``, the CA
    file that signed its certificate; ``cert`` and ``key`` are presented where it requires
    client certificates (``--tls-client-ca``).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:7200",
        token: Optional[str] = None,
        *,
        ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
    ) -> None:
        self._http = Http(url, token, tls_context(ca, cert, key))

    @property
    def url(self) -> str:
        """The agent's base URL."""
        return self._http.url

    def ensure(
        self,
        resource: str,
        *,
        min_version: Optional[int] = None,
        max_stale: Optional[Duration] = None,
        timeout: Optional[Duration] = None,
        lease: Optional[Duration] = None,
        key: Optional[str] = None,
        type: Optional[str] = None,
    ) -> State:
        """Makes ``resource`` (at least ``min_version``) installed here; returns where.

        A hit answers at once; a miss fetches on demand and waits up to ``timeout`` (the
        agent's default, 30 s, when ``None``), then raises :class:`~prewarm.errors.NotReady`
        while the fetch continues. ``max_stale`` bounds how long a superseded version may
        still be served. The state is leased for ``lease`` (the agent's ``--lease`` when
        ``None``): renew or release it with :meth:`renew` / :meth:`release`, or use
        :meth:`holding`. ``key`` and ``type`` name the execution in the agent's history.
        """
        params: Dict[str, Any] = {}
        if min_version is not None:
            params["min_version"] = int(min_version)
        if max_stale is not None:
            params["max_stale_ms"] = _ms(max_stale)
        if timeout is not None:
            params["timeout_ms"] = _ms(timeout)
        if lease is not None:
            params["lease_ms"] = _ms(lease)
        if key is not None:
            params["key"] = key
        if type is not None:
            params["type"] = type
        path = "/v1/states/" + urllib.parse.quote(resource, safe="/")
        if params:
            path += "?" + urllib.parse.urlencode(params)
        wait = params.get("timeout_ms", _DEFAULT_TIMEOUT * 1000) / 1000
        return State.from_json(self._http.call("GET", path, timeout=wait + _SLACK))

    def renew(self, lease: int, duration: Optional[Duration] = None) -> int:
        """Makes lease ``lease`` end ``duration`` from now (the agent's ``--lease`` when
        ``None``); returns its length in milliseconds. Raises
        :class:`~prewarm.errors.UnknownLease` once it expired or was released."""
        path = f"/v1/leases/{int(lease)}"
        if duration is not None:
            path += f"?lease_ms={_ms(duration)}"
        return int(self._http.call("PUT", path)["lease_ms"])

    def release(self, lease: int) -> None:
        """Releases lease ``lease`` now: its state may be evicted from then on. Raises
        :class:`~prewarm.errors.UnknownLease` once it expired or was released."""
        self._http.call("DELETE", f"/v1/leases/{int(lease)}")

    def inventory(self) -> Dict[str, Any]:
        """What the capacity holds: ``{capacity, cache_used, cache_budget, states: [{resource,
        version, bytes, path, stale, leased}]}``."""
        inventory: Dict[str, Any] = self._http.call("GET", "/v1/inventory")
        return inventory

    @contextlib.contextmanager
    def holding(
        self,
        resource: str,
        *,
        lease: Optional[Duration] = None,
        **options: Any,
    ) -> Iterator[State]:
        """``ensure(resource, **options)``, and keeps the state leased while the block runs.

        The lease (``lease`` long, default the agent's) is renewed from a background thread
        every third of its length, and released when the block exits, even by an exception::

            with agent.holding("models/llama", min_version=3) as state:
                serve(state.path)
        """
        state = self.ensure(resource, lease=lease, **options)
        if state.lease is None:  # evicted before it could be leased: nothing to hold
            yield state
            return
        renewer = _Renewer(self, state.lease, lease, state.lease_ms / 3000)
        renewer.start()
        try:
            yield state
        finally:
            renewer.stop()
            with contextlib.suppress(UnknownLease):
                self.release(state.lease)


class _Renewer(threading.Thread):
    """Renews one lease every ``every`` seconds until stopped or the lease is gone."""

    def __init__(self, agent: Agent, lease: int, length: Optional[Duration], every: float) -> None:
        super().__init__(name=f"prewarm-lease-{lease}", daemon=True)
        self._agent, self._lease, self._length = agent, lease, length
        self._every = max(every, 0.05)
        self._done = threading.Event()

    def run(self) -> None:
        """Renews until :meth:`stop`; a renewal that fails is logged and retried."""
        while not self._done.wait(self._every):
            try:
                self._agent.renew(self._lease, self._length)
            except UnknownLease:
                log.warning("prewarm: lease %d expired before it could be renewed", self._lease)
                return
            except PrewarmError as e:
                log.warning("prewarm: renewing lease %d failed (will retry): %s", self._lease, e)

    def stop(self) -> None:
        """Stops renewing and waits for the thread."""
        self._done.set()
        self.join()

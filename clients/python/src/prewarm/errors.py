"""Typed errors: one class per error the agent's and coordinator's HTTP APIs answer.

Every API error body is ``{"error": kind, "message": text}``; :func:`from_response` picks the
class by ``kind`` first (the most specific), then by HTTP status.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class PrewarmError(Exception):
    """Any failure of a call to an agent or a coordinator."""

    def __init__(self, message: str, status: Optional[int] = None, kind: str = "") -> None:
        super().__init__(f"{status} {kind}: {message}" if status else message)
        #: HTTP status (``None`` when no answer came).
        self.status = status
        #: The API's error kind (``unknown_state``, ``timeout``…), empty when none.
        self.kind = kind
        #: The API's explanation.
        self.message = message


class ConnectionFailed(PrewarmError):
    """The agent or coordinator could not be reached, or its answer was not HTTP/JSON."""


class BadRequest(PrewarmError):
    """400: an invalid resource id, parameter or event body."""


class InvalidResource(BadRequest):
    """400 ``invalid_resource``: the resource id is not valid."""


class Unauthorized(PrewarmError):
    """401: missing or wrong bearer token."""


class Forbidden(PrewarmError):
    """403 ``forbidden``: the token lacks the capability, or the resource is outside its
    prefixes (tenant-scoped tokens; the same answer whether the state exists or not)."""


class NotFound(PrewarmError):
    """404: an unknown resource, version, lease or path."""


class UnknownState(NotFound):
    """404 ``unknown_state``: the store has no such resource, or no recent-enough version."""


class UnknownLease(NotFound):
    """404 ``unknown_lease``: the lease expired or was released."""


class RequestTimeout(PrewarmError):
    """408: the request body took too long to arrive (coordinator)."""


class PayloadTooLarge(PrewarmError):
    """413: too many events or too large a body (coordinator)."""


class SourceError(PrewarmError):
    """502: the fetch failed (the source refused or broke, verification, disk)."""


class NoSource(PrewarmError):
    """503 ``no_source``: the agent is not attached to a coordinator."""


class Overloaded(PrewarmError):
    """503 ``overloaded``: shed under load, nothing done (the coordinator's event slots were
    full; the agent held its ``--max-leases`` leases). Retry after :attr:`retry_after` s."""

    #: Seconds the answer's ``Retry-After`` asked to wait (``None`` when it named none).
    retry_after: Optional[float] = None


class RateLimited(PrewarmError):
    """429 ``rate_limited``: the token's events per second were spent (coordinator). Retry
    after :attr:`retry_after` s."""

    #: Seconds the answer's ``Retry-After`` asked to wait (``None`` when it named none).
    retry_after: Optional[float] = None


class NotReady(PrewarmError, TimeoutError):
    """504 ``timeout``: not installed within the timeout; the fetch continues."""


class CacheFull(PrewarmError):
    """507 ``cache_full``: the cache cannot hold the state without evicting leased ones."""


_BY_KIND: Dict[str, Type[PrewarmError]] = {
    "invalid_resource": InvalidResource,
    "unknown_state": UnknownState,
    "unknown_lease": UnknownLease,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "no_source": NoSource,
    "overloaded": Overloaded,
    "rate_limited": RateLimited,
    "cache_full": CacheFull,
}

_BY_STATUS: Dict[int, Type[PrewarmError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: RequestTimeout,
    413: PayloadTooLarge,
    429: RateLimited,
    502: SourceError,
    503: NoSource,
    504: NotReady,
    507: CacheFull,
}


def from_response(
    status: int, kind: str, message: str, retry_after: Optional[str] = None
) -> PrewarmError:
    """The typed error for an API answer of ``status`` with ``{error: kind, message}`` (and
    its ``Retry-After`` header, seconds, when it had one)."""
    cls = _BY_KIND.get(kind) or _BY_STATUS.get(status) or PrewarmError
    err = cls(message, status=status, kind=kind)
    if isinstance(err, (Overloaded, RateLimited)) and retry_after:
        try:
            err.retry_after = float(retry_after)
        except ValueError:
            pass
    return err

"""The one HTTP exchange both clients make: a request, a JSON answer or a typed error."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Optional

from .errors import ConnectionFailed, PrewarmError, from_response


def base_url(url: str) -> str:
    """``url`` with a scheme (``http://`` when it has none) and no trailing slash."""
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


class Http:
    """Requests to one base URL, with the bearer token when there is one."""

    def __init__(self, url: str, token: Optional[str]) -> None:
        self.url = base_url(url)
        self._headers = {"accept": "application/json"}
        if token:
            self._headers["authorization"] = "Bearer " + token.strip()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 30.0,
    ) -> Any:
        """``method path`` (with ``body`` as JSON); the decoded answer (``None`` when empty).

        Raises the :mod:`prewarm.errors` class of an API error, :class:`ConnectionFailed`
        when there is no usable answer.
        """
        data = None
        headers = dict(self._headers)
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise _api_error(e) from None
        except (OSError, ValueError) as e:  # URLError, refused, reset, socket timeout
            raise ConnectionFailed(f"{method} {self.url}{path}: {e}") from e
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ConnectionFailed(f"{method} {self.url}{path}: not JSON: {raw[:200]!r}") from e


def _api_error(e: urllib.error.HTTPError) -> PrewarmError:
    """The typed error of an HTTP error answer."""
    try:
        raw = e.read()
    except OSError:
        raw = b""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {"error": "", "message": raw.decode("utf-8", "replace") or str(e.reason)}
    return from_response(e.code, str(doc.get("error", "")), str(doc.get("message", "")))

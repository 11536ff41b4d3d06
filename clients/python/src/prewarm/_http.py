"""The one HTTP exchange both clients make: a request, a JSON answer or a typed error."""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from typing import Any, Optional

from .errors import ConnectionFailed, PrewarmError, from_response


def base_url(url: str) -> str:
    """``url`` with a scheme (``http://`` when it has none) and no trailing slash."""
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def tls_context(
    ca: Optional[str], cert: Optional[str], key: Optional[str]
) -> Optional[ssl.SSLContext]:
    """The TLS settings of an ``https://`` URL: the server verified against ``ca`` (the
    system's roots when ``None``), and ``cert``/``key`` presented where the server requires
    a client certificate (``--tls-client-ca``). ``None`` when none is given."""
    if ca is None and cert is None:
        return None
    ctx = ssl.create_default_context(cafile=ca)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


class Http:
    """Requests to one base URL, with the bearer token when there is one."""

    def __init__(
        self, url: str, token: Optional[str], tls: Optional[ssl.SSLContext] = None
    ) -> None:
        self.url = base_url(url)
        self._tls = tls
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
            with urllib.request.urlopen(req, timeout=timeout, context=self._tls) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise _api_error(e) from None
        # URLError, refused, reset, socket timeout, TLS refused; HTTPException: an answer that
        # is not HTTP (a TLS port spoken to in plain HTTP answers with a TLS alert).
        except (OSError, ValueError, http.client.HTTPException) as e:
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
    return from_response(
        e.code,
        str(doc.get("error", "")),
        str(doc.get("message", "")),
        e.headers.get("Retry-After") if e.headers is not None else None,
    )

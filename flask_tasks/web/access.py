"""Who may see and drive every task: an operator; and who sees only its own: a token's subject.

A task id is a capability, so listing every task (GET /task), the dashboard, /metrics and the bulk
actions are an operator's. A request is an operator's when it carries

- a bearer token with the `operator` scope (RFC 9068's space-separated `scope` claim), which
  POST /token gives the clients added with `flask --app app clients add NAME --operator`; or
- HTTP Basic with OPERATOR_PASSWORD as its password (any user name), compared in constant time; or
- nothing, but only while neither OPERATOR_PASSWORD nor an operator client is configured, and only
  from loopback with no Forwarded or X-Forwarded-For header: `honcho start` on a laptop just works,
  while a proxy on the same host (whose requests all come from loopback) makes nobody an operator.
  Such a request must also name the server by a loopback name (Host: localhost, 127.0.0.1, [::1]),
  so a page whose own name was made to resolve to 127.0.0.1 (DNS rebinding) is no operator.

Rights from Basic or from loopback come with the browser (it resends a Basic password by itself),
so they are refused for a cross-site request (an Origin, or Sec-Fetch-Site, that is not this
server's): a page elsewhere cannot drive the dashboard's actions through an operator's browser.
A bearer token is never sent by a browser on its own, so it needs no such check.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from flask import current_app, request

from flask_tasks import db
from flask_tasks.auth import OPERATOR_SCOPE, AuthError, has_scope
from flask_tasks.web.pool import get_db
from flask_tasks.web.request_io import request_claims, settings

# Whether an operator client exists is asked once per process every this many seconds: a client
# added (or removed) with the CLI takes effect for loopback requests within that time.
OPERATOR_CLIENTS_CACHE_SECONDS = 5.0
_CACHE = "flask_tasks.operator_clients"  # app.extensions: [checked at (monotonic), exists]
# Any of these says a proxy passed the request on. nginx's plain proxy_pass adds none of them (and sends
# Host as the upstream's own address): the README says to set OPERATOR_PASSWORD behind any proxy.
PROXY_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Real-IP",
    "Via",
    "CF-Connecting-IP",
    "True-Client-IP",
)


class Viewer(NamedTuple):
    """Who asks: an operator (every task), or a token's subject (its own tasks)."""

    operator: bool
    subject: str | None


def _scheme() -> str:
    """The Authorization header's scheme, lower case; "" without the header."""
    return request.headers.get("Authorization", "").strip().partition(" ")[0].lower()


def _bearer_claims() -> dict[str, Any] | None:
    """The claims of the request's bearer token; None when it sends none (or sends Basic)."""
    return None if _scheme() == "basic" else request_claims()


def operator_clients_exist() -> bool:
    """Whether any client's tokens carry the operator scope (asked at most every few seconds per process)."""
    cached = current_app.extensions.setdefault(_CACHE, [float("-inf"), False])
    now = time.monotonic()
    if now - cached[0] >= OPERATOR_CLIENTS_CACHE_SECONDS:
        cached[1] = bool(db.run(get_db(), "operator_clients_exist")[0][0])
        cached[0] = now
    return cached[1]


def _refuse(status: int, message: str) -> AuthError:
    # A browser prompts for a password only when a 401 names Basic.
    return AuthError(status, message, basic=settings().operator_password is not None)


def _from_loopback() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _loopback_host() -> bool:
    """Whether the request names this server by a loopback name (Host), as a browser on this machine does.

    A page elsewhere whose name is made to resolve to 127.0.0.1 (DNS rebinding) sends its own name.
    """
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cross_site(forwarded_host: bool) -> bool:
    """Whether a browser says that the request comes from a page of another site.

    `forwarded_host`: a proxy's X-Forwarded-Host names this server too. Only for a password: a page
    elsewhere can send that header only after a CORS preflight, and then the browser sends no password;
    for loopback, where no credential is needed, it could.
    """
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    own = {request.host}  # the Host it was asked by, and PUBLIC_URL's
    if settings().public_url:
        own.add(urlsplit(settings().public_url).netloc)
    if forwarded_host:
        own.add(request.headers.get("X-Forwarded-Host", "").split(",")[0].strip())
    return origin == "null" or urlsplit(origin).netloc.lower() not in {name.lower() for name in own if name}


def _without_token() -> None:
    """Operator rights from Basic or from loopback, or AuthError saying why not."""
    config = settings()
    how = "send an operator token (clients add NAME --operator, then POST /token)"
    if _scheme() == "basic":
        if config.operator_password is None:
            raise _refuse(401, f"no operator password is configured (OPERATOR_PASSWORD): {how}")
        try:
            given = (request.authorization.password or "") if request.authorization else ""
        except ValueError:  # a Basic header werkzeug cannot decode
            given = ""
        if not hmac.compare_digest(given.encode(), config.operator_password.encode()):
            raise _refuse(401, "wrong operator password")
        if _cross_site(forwarded_host=True):
            raise _refuse(403, "a cross-site request may not use the operator password")
        return
    if config.operator_password is not None:
        raise _refuse(401, f"operators only: send the operator password with HTTP Basic, or {how}")
    if operator_clients_exist():
        raise _refuse(401, f"operators only: {how}")
    if not _from_loopback():
        raise _refuse(
            401, f"operators only: without OPERATOR_PASSWORD or an operator client, only loopback may; or {how}"
        )
    if any(name in request.headers for name in PROXY_HEADERS):
        raise _refuse(
            403,
            "a request through a proxy is not trusted as loopback: set OPERATOR_PASSWORD, or add an operator client",
        )
    if not _loopback_host():
        raise _refuse(403, "a request from loopback must name this server localhost, 127.0.0.1 or [::1] (Host)")
    if _cross_site(forwarded_host=False):
        raise _refuse(403, "a cross-site request may not act as the loopback operator")


def require_operator() -> None:
    """Nothing for an operator's request; AuthError(401 or 403) for any other."""
    claims = _bearer_claims()
    if claims is not None:
        if not has_scope(claims, OPERATOR_SCOPE):
            raise _refuse(403, f"this token has no [{OPERATOR_SCOPE}] scope: it sees only its own tasks")
        return
    _without_token()


def viewer() -> Viewer:
    """An operator, or the subject of a token without the operator scope; AuthError(401) for anyone else."""
    claims = _bearer_claims()
    if claims is not None:
        return Viewer(has_scope(claims, OPERATOR_SCOPE), claims["sub"])
    _without_token()
    return Viewer(True, None)


def asker() -> Viewer:
    """Whoever asks, for an action anyone may take on some tasks (a retry): an operator or not, with its
    token's subject if it sends one. AuthError only for credentials that are wrong (or refused here)."""
    claims = _bearer_claims()
    if claims is not None:
        return Viewer(has_scope(claims, OPERATOR_SCOPE), claims["sub"])
    if _scheme() == "basic":
        _without_token()  # a password sent must be the right one
        return Viewer(True, None)
    try:
        _without_token()
    except AuthError:
        return Viewer(False, None)
    return Viewer(True, None)

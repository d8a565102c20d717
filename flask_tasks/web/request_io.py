"""What routes read from a request (its JSON body, its token) and how they answer JSON."""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, g, request

from flask_tasks.auth import Keys, bearer_token, verify_token
from flask_tasks.models import ApiError

KEYS = "flask_tasks.keys"


def settings() -> Any:
    """The app's Settings."""
    return current_app.config["SETTINGS"]


def registry() -> Any:
    """The app's task Registry."""
    return current_app.config["REGISTRY"]


def request_claims() -> dict[str, Any] | None:
    """The claims of the request's bearer token; None without one; AuthError for a bad one."""
    if "claims" not in g:
        token = bearer_token(request.headers.get("Authorization"))
        keys: Keys = current_app.extensions[KEYS]
        g.claims = None if token is None else verify_token(keys, settings(), token)
    return g.claims


def request_subject() -> str | None:
    """Whose tasks this request may see besides those posted without a token."""
    claims = request_claims()
    return None if claims is None else claims["sub"]


def json_body() -> Any:
    """The request's body parsed as JSON, or ApiError (415, 400; 413 from werkzeug when too large)."""
    if not request.is_json:
        raise ApiError(415, "the request body must be JSON, sent with Content-Type: application/json")
    raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH this raises 413
    g.body_bytes = len(raw)
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON: it is nested too deeply") from None


def prefers_minimal() -> bool:
    """Whether the request says `Prefer: return=minimal` (RFC 7240): answer created tasks by their ids alone."""
    for header in request.headers.getlist("Prefer"):
        for preference in header.split(","):
            name, _, value = preference.split(";")[0].partition("=")
            if name.strip().lower() == "return" and value.strip().strip('"').lower() == "minimal":
                return True
    return False


def _refuse_constant(name: str) -> None:
    # Python reads NaN and Infinity, but they are not JSON and PostgreSQL refuses them.
    raise ValueError(f"{name} is not a JSON number")


def dumps(value: Any) -> str:
    # Answers are built from parsed JSON and database rows, which cannot hold a cycle:
    # skipping the encoder's cycle check makes a 1,000-task answer a quarter cheaper.
    return json.dumps(value, separators=(",", ":"), check_circular=False)


def json_response(value: Any, status: int = 200) -> Any:
    return current_app.response_class(dumps(value) + "\n", status, mimetype="application/json")

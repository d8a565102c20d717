"""Every error is JSON {"message": ...}, never a traceback; and the security headers of every answer."""

from __future__ import annotations

import logging

import psycopg2.pool
from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from flask_tasks import db
from flask_tasks.auth import AuthError
from flask_tasks.models import ApiError
from flask_tasks.stopping import one_line

log = logging.getLogger("flask_tasks.web")

# On every response: no content sniffing, no framing, no referrer; HTML pages (the docs)
# may load scripts, styles and data only from this server.
JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"
HTML_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def handle_api_error(err: ApiError):
    return jsonify(message=err.message), err.status


def handle_auth_error(err: AuthError):
    headers = {}
    if err.status == 401 and request.path == "/token":  # RFC 6749: client credentials, never a bearer token
        headers["WWW-Authenticate"] = 'Basic realm="flask-tasks"'
    elif err.status == 401:  # RFC 6750: say which scheme, and whether a token was sent and refused
        invalid = ', error="invalid_token"' if "Authorization" in request.headers else ""
        headers["WWW-Authenticate"] = f'Bearer realm="flask-tasks"{invalid}'
    elif err.status == 403:
        headers["WWW-Authenticate"] = 'Bearer realm="flask-tasks", error="insufficient_scope"'
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    response = jsonify(message=err.message)
    response.status_code = err.status
    response.headers.extend(headers)
    if err.status == 401 and err.basic:  # RFC 9110 lets a 401 offer several schemes: Bearer stays for tokens
        response.headers.add("WWW-Authenticate", 'Basic realm="flask-tasks"')
    return response


def security_headers(response):
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Content-Security-Policy"] = HTML_POLICY if response.mimetype == "text/html" else JSON_POLICY
    return response


def handle_http_error(err: HTTPException):
    # Keep werkzeug's headers (Allow on a 405) but answer JSON.
    headers = [(k, v) for k, v in err.get_headers() if k.lower() != "content-type"]
    return jsonify(message=err.description or err.name), err.code, headers


def handle_database_down(err: Exception):
    g.db_broken = True
    log.warning("database unavailable: %s", one_line(err))
    return jsonify(message="the database is unavailable; try again shortly"), 503


def handle_unexpected(err: Exception):
    log.exception("unexpected error on %s %s", request.method, request.path)
    return jsonify(message="internal server error"), 500


def register(app: Flask) -> None:
    """Answer every error as JSON, and add the security headers to every answer."""
    app.after_request(security_headers)
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(AuthError, handle_auth_error)
    app.register_error_handler(HTTPException, handle_http_error)
    for error in (*db.TRANSIENT_ERRORS, psycopg2.pool.PoolError):
        app.register_error_handler(error, handle_database_down)
    app.register_error_handler(Exception, handle_unexpected)

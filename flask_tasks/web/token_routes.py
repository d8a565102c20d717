"""Token routes: POST /token for clients, what a token allows, the public keys; and their part of the API document."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from pydantic import ValidationError

from flask_tasks.auth import OPERATOR_SCOPE, AuthError, Keys, issue_token
from flask_tasks.clients import authenticate
from flask_tasks.config import Settings
from flask_tasks.models import ApiError, TokenRequest, request_error
from flask_tasks.registry import Registry
from flask_tasks.web import apidoc
from flask_tasks.web.apidoc import JSON, error, json_answer, ref
from flask_tasks.web.pool import get_db
from flask_tasks.web.request_io import KEYS, json_body, request_claims, settings

tokens = Blueprint("tokens", __name__)


def basic_credentials() -> Any:
    """The request's HTTP Basic credentials, or None (also for a header werkzeug cannot decode)."""
    try:
        authorization = request.authorization
    except ValueError:  # e.g. non-ASCII in a Basic header
        return None
    return authorization if authorization is not None and authorization.type == "basic" else None


def token_credentials() -> TokenRequest:
    basic = basic_credentials()
    if basic is not None:
        body = {"client_id": basic.username or "", "client_secret": basic.password or ""}
    elif request.content_length or request.is_json:
        body = json_body()
    else:
        raise ApiError(400, 'send {"client_id": ..., "client_secret": ...} as JSON, or use HTTP Basic auth')
    if not isinstance(body, dict):
        raise ApiError(400, 'the request body must be a JSON object: {"client_id": ..., "client_secret": ...}')
    try:
        return TokenRequest.model_validate(body)
    except ValidationError as err:
        known = f"a token request has {', '.join(TokenRequest.model_fields)}"
        raise ApiError(400, request_error(err.errors()[0], known)) from None


@tokens.post("/token")
def create_token():
    """A short-lived token for a client whose credentials are right; its claims list the tasks it may run."""
    credentials = token_credentials()
    keys: Keys = current_app.extensions[KEYS]
    keys.signer()  # a server that cannot sign says so before any scrypt work
    client = authenticate(get_db(), credentials.client_id, credentials.client_secret)
    token, exp = issue_token(keys, settings(), credentials.client_id, client.tasks, client.operator)
    answer: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": exp - int(time.time()),
        "allowed_tasks": {name: True for name in client.tasks},
    }
    if client.operator:
        answer["scope"] = OPERATOR_SCOPE  # RFC 6749 section 5.1: the scope granted
    response = jsonify(answer)
    response.headers["Cache-Control"] = "no-store"
    return response


@tokens.get("/protected")
def protected_tasks():
    """What the request's token allows: {"allowed_tasks": {...}, "exp": ...}, as in flask-tasks v2."""
    claims = request_claims()
    if claims is None:
        raise AuthError(401, "send Authorization: Bearer <token>; get one at POST /token")
    allowed = {name: True for name, value in claims.get("allowed_tasks", {}).items() if value is True}
    response = jsonify(allowed_tasks=allowed, exp=claims["exp"])
    response.headers["Cache-Control"] = "no-store"
    return response


@tokens.get("/.well-known/jwks.json")
def public_keys():
    """The public keys tokens are checked with, so other services can check them too."""
    return jsonify(current_app.extensions[KEYS].jwks())


# -- the API document's part ------------------------------------------------------------


def document_part(registry: Registry, settings: Settings) -> dict[str, Any]:
    """This blueprint's schemas and paths."""
    schemas = {
        "AllowedTasks": {
            "type": "object",
            "description": "The task types the token allows: name -> true.",
            "additionalProperties": {"const": True},
        },
        "TokenRequest": apidoc.token_request(),
        "Token": {
            "type": "object",
            "properties": {
                "access_token": {"type": "string", "description": "A JWT."},
                "token_type": {"const": "Bearer"},
                "expires_in": {"type": "integer", "description": "Seconds."},
                "allowed_tasks": ref("AllowedTasks"),
                "scope": {
                    "const": OPERATOR_SCOPE,
                    "description": "Only for an operator client (`clients add NAME --operator`): the token "
                    "lists and acts on every task (GET /task, retries, bulk actions, the dashboard, /metrics).",
                },
            },
            "required": ["access_token", "token_type", "expires_in", "allowed_tasks"],
        },
        "JWK": {
            "type": "object",
            "properties": {name: {"type": "string"} for name in ("kty", "kid", "use", "alg", "n", "e")},
            "required": ["kty", "kid", "use", "alg", "n", "e"],
        },
    }
    token_responses = {
        "200": json_answer(
            ref("Token"),
            "An access token.",
            headers={"Cache-Control": {"required": True, "schema": {"type": "string", "const": "no-store"}}},
        ),
        "400": error("The body is not a valid credentials request."),
        "401": error(
            "Wrong client credentials.",
            headers={"WWW-Authenticate": {"description": "A challenge.", "schema": {"type": "string"}}},
        ),
        "413": error("The body is larger than MAX_CONTENT_LENGTH."),
        "415": error("The body is not sent as application/json."),
        "429": error(
            "Too many failed attempts for that client id.",
            headers={"Retry-After": {"required": True, "description": "Seconds.", "schema": {"type": "string"}}},
        ),
        "503": error("No signing key is configured, or the database is unavailable."),
    }
    paths = {
        "/protected": {
            "get": {
                "tags": ["auth"],
                "operationId": "getProtected",
                "summary": "What the bearer token allows",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": json_answer(
                        {
                            "type": "object",
                            "properties": {"allowed_tasks": ref("AllowedTasks"), "exp": {"type": "integer"}},
                            "required": ["allowed_tasks", "exp"],
                        },
                        "The token's allowed task types and expiry (unix seconds).",
                    ),
                    "401": error("No token, or a token that is not valid.", headers=apidoc.BEARER_CHALLENGE),
                    "503": error(apidoc.UNAVAILABLE),
                },
            }
        },
        "/token": {
            "post": {
                "tags": ["auth"],
                "operationId": "issueToken",
                "summary": "Get an access token (client credentials)",
                "description": "Send the client id and secret as a JSON body, or with HTTP Basic auth.",
                "security": [{}, {"clientCredentials": []}],
                "requestBody": {"required": False, "content": {JSON: {"schema": ref("TokenRequest")}}},
                "responses": token_responses,
            }
        },
        "/.well-known/jwks.json": {
            "get": {
                "tags": ["auth"],
                "operationId": "getJwks",
                "summary": "The public keys that verify access tokens",
                "responses": {
                    "200": json_answer(
                        {
                            "type": "object",
                            "properties": {"keys": {"type": "array", "items": ref("JWK")}},
                            "required": ["keys"],
                        },
                        "A JSON Web Key Set.",
                    ),
                    "503": error(apidoc.UNAVAILABLE),
                },
            }
        },
    }
    return {"schemas": schemas, "paths": paths}

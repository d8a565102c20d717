"""Peer routes: the signed callback of a peer server when a task it ran for us ends, and their API document part."""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Blueprint, request

from flask_tasks import peers, webhooks
from flask_tasks.auth import AuthError
from flask_tasks.config import Settings
from flask_tasks.models import ApiError
from flask_tasks.registry import Registry
from flask_tasks.web.apidoc import JSON, error, json_answer
from flask_tasks.web.pool import get_db
from flask_tasks.web.request_io import json_response, settings

peer_callbacks = Blueprint("peers", __name__)
REPLAY_WINDOW = 300.0  # seconds: a callback signed longer ago (or ahead) than this is refused


@peer_callbacks.post("/peer/<name>/callback")
def peer_callback(name: str):
    """End the task the peer ran with its status, result and error; a second callback changes nothing."""
    peer = settings().peers.get(name)
    raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH this raises 413
    try:
        if peer is None:  # the same answer as a bad signature: the names of the peers are nobody's business
            raise webhooks.WebhookVerificationError("no such peer")
        webhooks.verify(peer.webhook_secret, request.headers, raw, tolerance=REPLAY_WINDOW)
    except webhooks.WebhookVerificationError as err:
        raise AuthError(401, f"the callback is not signed by peer [{name}]: {err}") from None
    try:
        task = json.loads(raw)
        task_id = str(uuid.UUID(task["idempotency_key"]))  # our task id, sent as its idempotency key
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise ApiError(400, "the callback must be a task whose idempotency_key is our task id") from None
    ended = peers.ending(name, task, settings().max_task_time)
    if ended is None:
        return json_response({"settled": False, "message": "the task has not ended there"})
    # Only the peer's own task for ours ends it (its id must be the one the peer gave when we sent it).
    changed = peers.settle(get_db(), task_id, ended)
    return json_response({"settled": changed, "message": "ended here" if changed else "nothing to end here"})


def document_part(registry: Registry, settings: Settings) -> dict[str, Any]:
    """This blueprint's schemas and paths."""
    answer = {
        "type": "object",
        "properties": {"settled": {"type": "boolean"}, "message": {"type": "string"}},
        "required": ["settled", "message"],
    }
    signed = (
        "Signed as Standard Webhooks specify (webhook-id, webhook-timestamp, webhook-signature) with the peer's "
        f"WEBHOOK_SECRET, given here in PEERS; a callback signed more than {REPLAY_WINDOW:.0f} s ago is refused. "
        "It ends the task only if it comes from the peer's task for it (the id the peer gave when it was sent)."
    )
    paths = {
        "/peer/{name}/callback": {
            "post": {
                "tags": ["peers"],
                "operationId": "peerCallback",
                "summary": "A peer server reports the end of a task it ran for this one",
                "description": signed,
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": "#/components/schemas/Task"}}}},
                "responses": {
                    "200": json_answer(answer, "Noted: whether it ended the task here."),
                    "400": error("The body is not a task sent for one of ours."),
                    "401": error(
                        "The signature is missing, wrong or too old, or no peer has that name.",
                        headers={"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
                    ),
                    "413": error("The body is larger than MAX_CONTENT_LENGTH."),
                    "503": error("The database is unavailable; try again shortly."),
                },
            }
        }
    }
    return {"schemas": {}, "paths": paths, "tags": [{"name": "peers", "description": "Callbacks from peer servers."}]}

"""Webhooks as Standard Webhooks specify (https://www.standardwebhooks.com): secrets, signing, verifying.

Deliveries to a notify_url are signed here; callbacks from peer servers are verified here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
USER_AGENT = "flask-tasks"


class WebhookVerificationError(Exception):
    """A webhook's headers are missing, its signature does not match, or its timestamp is out of tolerance."""


# --- Standard Webhooks (https://www.standardwebhooks.com) ---


def parse_secret(text: str) -> bytes:
    """The key in a `whsec_<base64>` secret; ValueError when it is not one."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r} (make one with generate_secret())")
    encoded = text[len(SECRET_PREFIX) :]
    try:
        # Padding is optional in the wild (the reference library adds it back); anything else must be base64.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        raise ValueError(f"a webhook secret is {SECRET_PREFIX!r} followed by base64") from None
    if not 24 <= len(key) <= 64:  # the spec's bounds: shorter keys are guessable, longer ones are useless
        raise ValueError(f"a webhook secret holds 24 to 64 bytes, this one holds {len(key)}")
    return key


def generate_secret() -> str:
    """A new random secret, in the `whsec_` form receivers expect."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "msg_id.timestamp.body">`: one webhook-signature entry."""
    digest = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: bytes, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Every header of a webhook POST. Keep msg_id the same across retries: receivers use it to drop repeats."""
    if not msg_id or not msg_id.isascii() or not msg_id.isprintable() or " " in msg_id:
        raise ValueError("a webhook id is printable ASCII without spaces")
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def verify(
    secret: bytes, headers: Mapping[str, str], body: bytes, tolerance: float = 300, now: float | None = None
) -> None:
    """Accept a webhook signed with `secret`, or raise WebhookVerificationError."""
    lower = {name.lower(): value for name, value in headers.items()}
    msg_id, stamp, signatures = (lower.get(f"webhook-{n}") for n in ("id", "timestamp", "signature"))
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:  # 12 digits reach the year 33658
        raise WebhookVerificationError("webhook-timestamp is not an integer of unix seconds")
    # The timestamp is signed, so an old message cannot be made fresh: this window is what bounds replays.
    age = (time.time() if now is None else now) - int(stamp)
    if age > tolerance:
        raise WebhookVerificationError("message timestamp too old")
    if age < -tolerance:
        raise WebhookVerificationError("message timestamp too new")
    expected = sign(secret, msg_id, int(stamp), body)
    # Several space-separated signatures may come (during a key rotation); one match is enough.
    if any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures.split() if s.isascii()):
        return
    raise WebhookVerificationError("no matching signature")

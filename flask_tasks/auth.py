"""Tokens: RS256 JWTs signed for clients at POST /token and checked on requests.

Checking follows RFC 8725: the algorithm is fixed here (never read from the
token), `kid` picks one of the configured public keys (so keys can rotate: keep
the old public key listed until its last token expires), and exp, iat, iss,
aud and sub are required. PyJWT does the cryptography.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from flask_tasks.config import ConfigError, Settings

ALGORITHM = "RS256"
TOKEN_TYPE = "at+jwt"  # RFC 9068: an access token, so no other kind of JWT passes for one
TOKEN_TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068 section 4: both spellings, any case
MIN_KEY_BITS = 2048
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
# RFC 9068's `scope` claim (space-separated): a token with this one acts for an operator, on every task.
OPERATOR_SCOPE = "operator"


class AuthError(Exception):
    """A request without valid credentials (401) or with credentials that do not allow it (403)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None, basic: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after
        self.basic = basic  # a 401 also offers HTTP Basic (the operator password), so a browser prompts for it


def key_id(public_key: RSAPublicKey) -> str:
    """The RFC 7638 thumbprint of a key: the same key always gets the same id."""
    numbers = public_key.public_numbers()

    def b64(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    canonical = json.dumps({"e": b64(numbers.e), "kty": "RSA", "n": b64(numbers.n)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def _check_size(key: RSAPrivateKey | RSAPublicKey, variable: str) -> None:
    if key.key_size < MIN_KEY_BITS:
        raise ConfigError(f"{variable}: an RSA key of {key.key_size} bits is too weak; use {MIN_KEY_BITS} or more")


def _pem_blocks(text: str) -> list[bytes]:
    blocks, current = [], []
    for line in text.strip().splitlines():
        current.append(line.strip())
        if line.strip().startswith("-----END "):
            blocks.append("\n".join(current).encode() + b"\n")
            current = []
    if any(line for line in current):
        blocks.append("\n".join(current).encode())  # not a PEM block: let the parser say so
    return blocks


@dataclass(frozen=True)
class Keys:
    """The key that signs tokens (if this server issues them) and those that verify them, by kid."""

    signing: tuple[str, RSAPrivateKey] | None
    verifying: dict[str, RSAPublicKey]

    def signer(self) -> tuple[str, RSAPrivateKey]:
        """The kid and private key that sign tokens; AuthError(503) if this server has none."""
        if self.signing is None:
            raise AuthError(503, "this server issues no tokens: JWT_PRIVATE_PEM is not set")
        return self.signing

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JSON Web Key Set, for other services that check our tokens."""
        keys = []
        for kid, key in self.verifying.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": ALGORITHM})
        return {"keys": keys}


def load_keys(settings: Settings) -> Keys:
    """The configured RSA keys; ConfigError for one that cannot be read, is not RSA or is under 2048 bits."""
    signing = None
    verifying: dict[str, RSAPublicKey] = {}
    if settings.jwt_private_pem:
        try:
            private = serialization.load_pem_private_key(settings.jwt_private_pem.encode(), password=None)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"JWT_PRIVATE_PEM is not an unencrypted PEM private key: {err}") from None
        if not isinstance(private, RSAPrivateKey):
            raise ConfigError("JWT_PRIVATE_PEM must be an RSA key (tokens are RS256)")
        _check_size(private, "JWT_PRIVATE_PEM")
        kid = key_id(private.public_key())
        signing = (kid, private)
        verifying[kid] = private.public_key()  # tokens it signs are always accepted here
    for block in _pem_blocks(settings.jwt_public_pems or ""):
        try:
            public = serialization.load_pem_public_key(block)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"JWT_PUBLIC_PEM holds something that is not a PEM public key: {err}") from None
        if not isinstance(public, RSAPublicKey):
            raise ConfigError("JWT_PUBLIC_PEM must hold RSA keys (tokens are RS256)")
        _check_size(public, "JWT_PUBLIC_PEM")
        verifying[key_id(public)] = public
    return Keys(signing, verifying)


def issue_token(
    keys: Keys, settings: Settings, subject: str, tasks: list[str], operator: bool = False
) -> tuple[str, int]:
    """A signed token for `subject` allowing `tasks` (and carrying the operator scope if asked), and its expiry."""
    kid, private = keys.signer()
    now = int(time.time())
    exp = now + settings.token_lifetime
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": exp,
        "allowed_tasks": {name: True for name in tasks},
    }
    if operator:
        claims["scope"] = OPERATOR_SCOPE
    token = jwt.encode(claims, private, algorithm=ALGORITHM, headers={"kid": kid, "typ": TOKEN_TYPE})
    return token, exp


def verify_token(keys: Keys, settings: Settings, token: str) -> dict[str, Any]:
    """The claims of a valid token; AuthError(401) saying why one is not."""
    if not keys.verifying:
        raise AuthError(401, "this server accepts no tokens: neither JWT_PUBLIC_PEM nor JWT_PRIVATE_PEM is set")
    try:
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in keys.verifying:
            raise AuthError(401, "the token is signed by a key this server does not know (kid)")
        if str(header.get("typ", "")).lower() not in TOKEN_TYPES:
            raise AuthError(401, f"the token is not an access token (typ must be {TOKEN_TYPE})")
        claims = jwt.decode(
            token,
            keys.verifying[kid],
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "the token has expired") from None
    except jwt.InvalidTokenError as err:
        raise AuthError(401, f"the token is not valid: {err}") from None
    allowed = claims.get("allowed_tasks", {})
    if not isinstance(claims["sub"], str) or not claims["sub"] or not isinstance(allowed, dict):
        raise AuthError(401, "the token is not valid: sub must be a string and allowed_tasks an object")
    return claims


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None without the header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "the Authorization header must be: Bearer <token>")
    return token.strip()


def allows(claims: dict[str, Any], task_name: str) -> bool:
    return claims.get("allowed_tasks", {}).get(task_name) is True


def has_scope(claims: dict[str, Any], scope: str) -> bool:
    """Whether the token's `scope` claim (a space-separated string, RFC 9068) holds `scope`."""
    value = claims.get("scope")
    return isinstance(value, str) and scope in value.split()


def keys_or_exit(settings: Settings) -> Keys:
    """The keys for a web process at start; a key that cannot be used ends it with one line."""
    try:
        return load_keys(settings)
    except ConfigError as err:
        logging.getLogger("flask_tasks").critical("configuration error: %s", err)
        raise SystemExit(2) from None

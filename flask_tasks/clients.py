"""Clients that get tokens: their secrets (stored only as scrypt hashes), checking them, and the CLI."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import logging
import math
import secrets
from typing import Any, NamedTuple

import click
import psycopg2.extensions
from flask import current_app
from flask.cli import AppGroup

from flask_tasks import db
from flask_tasks.auth import AuthError
from flask_tasks.registry import Registry

# scrypt cost: about 50 to 120 ms and 32 MiB per check here. The parameters are stored
# with each hash, so raising them later keeps older secrets working.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MAX_MEMORY = 64 * 1024 * 1024
# After 5 failures in a row a client id waits 2 s, doubling with each failure, at most 5 min
# (flask_tasks_token_wait in the schema). Across all ids, at most this many failures a second:
# each costs a scrypt check, and a flood of made-up ids must not take every web worker.
FREE_FAILURES = 5
MAX_FAILURES_PER_SECOND = 10
MAX_CLIENT_ID = 200


def hash_secret(secret: str, salt: bytes | None = None, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$n$r$p$salt$hash` of a secret, with a new random salt unless one is given."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=MAX_MEMORY, dklen=32)
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"scrypt${n}${r}${p}${b64(salt)}${b64(digest)}"


def secret_matches(secret: str, stored: str) -> bool:
    """Whether a secret is the one a stored hash was made from (compared in constant time)."""
    _, n, r, p, salt, _ = stored.split("$")
    fresh = hash_secret(secret, base64.b64decode(salt), int(n), int(r), int(p))
    return hmac.compare_digest(fresh.encode(), stored.encode())


@functools.cache
def decoy_hash() -> str:
    """Checked against when the client id is unknown, so that case costs the same scrypt work.

    A server that issues tokens makes it at start (create_app), so no request pays for it;
    one that does not never spends scrypt's 32 MiB on it.
    """
    return hash_secret(secrets.token_urlsafe(32))


class Client(NamedTuple):
    """What a client's tokens carry: the protected task types they allow, and whether they act for an operator."""

    tasks: list[str]
    operator: bool


def authenticate(conn: psycopg2.extensions.connection, client_id: str, secret: str) -> Client:
    """What a client's tokens carry, if the secret is right; AuthError (401, or 429 while slowed) if not.

    Every request costs one scrypt check, for a known or unknown id alike. The attempt is
    counted before the check, in one statement, so parallel guesses cannot share one count.
    """
    if not client_id or len(client_id) > MAX_CLIENT_ID or "\x00" in client_id or "\x00" in secret:
        raise AuthError(401, "wrong client id or secret")
    if db.run(conn, "recent_token_failures")[0][0] >= MAX_FAILURES_PER_SECOND:
        raise AuthError(429, "too many failed token requests right now; try again in 1 s", 1)
    if not db.run(conn, "count_token_attempt", {"client_id": client_id}):
        rows = db.run(conn, "token_wait", {"client_id": client_id})
        seconds = max(1, math.ceil(rows[0][0] if rows else 1))
        raise AuthError(429, f"too many failed attempts for this client id; try again in {seconds} s", seconds)
    found = db.run(conn, "get_client", {"name": client_id})
    stored, tasks, operator = found[0] if found else (decoy_hash(), [], False)
    if not secret_matches(secret, stored) or not found:
        raise AuthError(401, "wrong client id or secret")
    db.run(conn, "clear_token_failures", {"client_id": client_id})
    return Client(list(tasks), bool(operator))


# -- flask --app app clients ... --------------------------------------------------------

clients_cli = AppGroup("clients", help="Manage the clients that get tokens at POST /token.")


def _cli_connection() -> psycopg2.extensions.connection:
    logging.getLogger("flask_tasks.db").setLevel(logging.WARNING)  # a command prints only its answer
    return db.open_connection(current_app.config["SETTINGS"], "cli")


def _task_list(value: str, registry: Registry) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    for name in names:
        task_type = registry.get(name)
        if task_type is None:
            raise click.BadParameter(f"task type [{name}] doesnt exist; known: {', '.join(registry.names())}")
        if not task_type.protected:
            click.echo(f"note: [{name}] is not protected: anyone may post it, with or without a token", err=True)
    return names


@clients_cli.command("add")
@click.argument("name")
@click.option("--tasks", default="", help="Comma-separated protected task types its tokens allow.")
@click.option("--operator", is_flag=True, help="Its tokens carry the operator scope: they list and act on every task.")
def add_client(name: str, tasks: str, operator: bool) -> None:
    """Add a client and print its secret (shown once, stored only as a hash)."""
    if not 1 <= len(name) <= MAX_CLIENT_ID or "\x00" in name or ":" in name:
        raise click.BadParameter(f"a client name has 1 to {MAX_CLIENT_ID} characters and no ':'")
    names = _task_list(tasks, current_app.config["REGISTRY"])
    secret = secrets.token_urlsafe(32)
    conn = _cli_connection()
    try:
        params: dict[str, Any] = {
            "name": name,
            "secret_hash": hash_secret(secret),
            "tasks": names,
            "operator": operator,
        }
        if not db.run(conn, "add_client", params):
            raise click.ClickException(f"a client named [{name}] exists; remove it first")
    finally:
        conn.close()
    click.echo(f"client_id: {name}")
    click.echo(f"client_secret: {secret}")
    click.echo(f"tasks: {','.join(names) or '(none)'}")
    if operator:
        click.echo("operator: yes (its tokens list and act on every task)")


@clients_cli.command("list")
def list_clients() -> None:
    """List the clients, the task types each may run, and which are operators."""
    conn = _cli_connection()
    try:
        rows = db.run(conn, "list_clients")
    finally:
        conn.close()
    if not rows:
        click.echo("no clients; add one with: flask --app app clients add NAME --tasks a,b")
    for name, tasks, operator, _created in rows:
        click.echo(f"{name}\t{','.join(tasks) or '(none)'}" + ("\toperator" if operator else ""))


@clients_cli.command("remove")
@click.argument("name")
def remove_client(name: str) -> None:
    """Remove a client. Tokens it already holds stay valid until they expire (TOKEN_LIFETIME)."""
    conn = _cli_connection()
    try:
        if not db.run(conn, "remove_client", {"name": name}):
            raise click.ClickException(f"no client named [{name}]")
    finally:
        conn.close()
    click.echo(f"removed {name}")

"""Settings read once from the environment (and `.env`), checked at start."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from dotenv import load_dotenv

from flask_tasks import webhooks

PROJECT_DIR = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting has a value the server cannot use; the message names it."""


# Threads per web worker: several requests in flight, whose commits PostgreSQL flushes together.
DEFAULT_GUNICORN_THREADS = 8


def _number(name: str, default: float, kind: type, minimum: float, maximum: float = math.inf) -> float:
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    if not minimum <= value <= maximum:
        limit = f"at least {minimum}" if maximum == math.inf else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name}={raw!r} must be {limit}")
    return value


def comma_list(text: str) -> list[str]:
    """A comma-separated list: items stripped, empty ones dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _module_names(name: str, default: str) -> str:
    """Comma-separated module names, normalised to "a,b"; ConfigError for one that cannot be a module."""
    raw = os.environ.get(name, "")
    modules = comma_list(raw) or [default]
    for module in modules:
        if not all(part.isidentifier() for part in module.split(".")):
            raise ConfigError(f"{name}={raw.strip()!r}: {module!r} is not a module name")
    return ",".join(modules)


def _boolean(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be true or false")


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    embedded_dir: Path
    max_task_time: int
    frontend_url: list[str]
    port: int
    gunicorn_workers: int
    gunicorn_threads: int
    group_commit: bool  # a web worker's threads share the commits of their single-task inserts
    max_content_length: int
    max_bulk_tasks: int
    worker_name: str
    poll_interval: float
    listen_notify: bool
    prepare_statements: bool
    lease_seconds: float
    batch_size: int
    max_attempts: int
    task_timeout: float | None
    retry_backoff: float
    shutdown_grace: float
    janitor_interval: float
    janitor_batch: int
    tasks_module: str  # comma-separated module names, as TASKS_MODULE gives them
    handler_tasks: list[str]  # the task types a handler claims; empty: all but handler_exclude_tasks
    handler_exclude_tasks: list[str]  # the task types a handler does not claim
    default_task_type: str
    log_level: str
    jwt_private_pem: str | None  # the key that signs tokens at POST /token
    jwt_public_pems: str | None  # the keys tokens are checked with (one or more PEM blocks)
    jwt_issuer: str
    jwt_audience: str
    token_lifetime: int
    jwt_leeway: int
    args_max_depth: int
    args_max_bytes: int
    max_result_bytes: int
    webhook_secret: bytes | None  # signs deliveries to notify_url (WEBHOOK_SECRET, whsec_ + base64)
    notify_allow_private: bool  # notify_url may be a loopback or private address (development, tests)
    webhook_backoff: float  # seconds before the first retry of a delivery, doubling
    webhook_max_attempts: int
    webhook_timeout: float  # seconds one delivery attempt may take
    webhook_concurrency: int  # deliveries a handler makes at once
    peers: dict[str, Peer]  # peer servers that tasks may be sent to, by name
    public_url: str | None  # this server's base URL as its peers reach it (their callbacks come there)
    peer_check_interval: float  # seconds after sending a task to a peer before asking it, if no callback came
    operator_password: str | None  # HTTP Basic password for the dashboard, the listing and /metrics
    stats_interval: float  # seconds between two counts of the tasks by status and type (task_counts)
    schedule: dict[str, Any]  # periodic tasks from configuration (SCHEDULE): name -> {"task", "cron", "args"}
    log_format: str  # text or json (one JSON object per line)

    @property
    def tasks_modules(self) -> list[str]:
        return self.tasks_module.split(",")


@dataclass(frozen=True)
class Peer:
    """Another flask-tasks server: where it is, how to get a token there, and the secret its callbacks carry."""

    name: str
    url: str  # its base URL, e.g. https://b.example.com
    client_id: str
    client_secret: str
    webhook_secret: bytes  # that server's WEBHOOK_SECRET: it signs the callbacks it sends here


def _secret(name: str) -> bytes | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return webhooks.parse_secret(raw)
    except ValueError as err:
        raise ConfigError(f"{name}: {err}") from None


def _peers() -> dict[str, Peer]:
    """PEERS: a JSON object, name -> {"url", "client_id", "client_secret", "webhook_secret"}."""
    raw = os.environ.get("PEERS", "").strip()
    if not raw:
        return {}
    try:
        given = json.loads(raw)
    except ValueError as err:
        raise ConfigError(f"PEERS is not valid JSON: {err}") from None
    if not isinstance(given, dict):
        raise ConfigError('PEERS must be a JSON object: {"name": {"url": ..., "client_id": ..., ...}}')
    peers = {}
    fields = ("url", "client_id", "client_secret", "webhook_secret")
    for name, peer in given.items():
        if not isinstance(peer, dict) or set(peer) != set(fields) or not all(isinstance(v, str) for v in peer.values()):
            raise ConfigError(f"PEERS[{name}] must be an object of strings with exactly {', '.join(fields)}")
        if not peer["url"].startswith(("http://", "https://")):
            raise ConfigError(f"PEERS[{name}].url must start with http:// or https://")
        try:
            secret = webhooks.parse_secret(peer["webhook_secret"])
        except ValueError as err:
            raise ConfigError(f"PEERS[{name}].webhook_secret: {err}") from None
        peers[name] = Peer(name, peer["url"].rstrip("/"), peer["client_id"], peer["client_secret"], secret)
    return peers


def _schedule() -> dict[str, Any]:
    """SCHEDULE: a JSON object of periodic tasks, {"name": {"task": ..., "cron": ..., "args": {...}}}.

    Only its shape is checked here; flask_tasks.periodic checks the cron expressions and task types.
    """
    raw = os.environ.get("SCHEDULE", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise ConfigError(f"SCHEDULE is not valid JSON: {err}") from None
    if not isinstance(value, dict) or not all(isinstance(entry, dict) for entry in value.values()):
        raise ConfigError('SCHEDULE must be a JSON object: {"name": {"task": "type", "cron": "*/5 * * * *"}}')
    return value


def _pem(variable: str, files_variable: str) -> str | None:
    """PEM text from a variable (literal \\n allowed, as one-line .env values need) or from files."""
    text = os.environ.get(variable, "").strip()
    files = [f.strip() for f in os.environ.get(files_variable, "").split(",") if f.strip()]
    if text and files:
        raise ConfigError(f"set {variable} or {files_variable}, not both")
    if files:
        try:
            return "\n".join(Path(f).read_text() for f in files)
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{files_variable}: cannot read {err.filename or ''}: {err.strerror or err}") from None
    return text.replace("\\n", "\n") or None


def load_settings() -> Settings:
    """Read every setting; raise ConfigError naming the first bad one.

    `.env` in the project folder fills in what the environment leaves unset;
    FLASK_TASKS_ENV_FILE names another file, or none when empty (the tests do that).
    """
    env_file = os.environ.get("FLASK_TASKS_ENV_FILE", str(PROJECT_DIR / ".env"))
    if env_file:
        load_dotenv(env_file)
    env = os.environ.get
    url = env("DATABASE_URL", "").strip() or None
    if url is not None and not url.startswith(("postgres://", "postgresql://")):
        raise ConfigError("DATABASE_URL must start with postgres:// or postgresql://")
    level = env("LOG_LEVEL", "").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL={level!r} must be DEBUG, INFO, WARNING or ERROR")
    # A browser's Origin has no path or trailing slash: https://app.example.com/ would never match.
    frontend = [o.strip().rstrip("/") for o in env("FRONTEND_URL", "*").split(",") if o.strip().rstrip("/")]
    handler_tasks = comma_list(env("HANDLER_TASKS", ""))
    handler_exclude = comma_list(env("HANDLER_EXCLUDE_TASKS", ""))
    if handler_tasks and handler_exclude:
        raise ConfigError("set HANDLER_TASKS or HANDLER_EXCLUDE_TASKS, not both")
    public_url = env("PUBLIC_URL", "").strip().rstrip("/") or None
    log_format = env("LOG_FORMAT", "").strip().lower() or "text"
    if log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT={log_format!r} must be text or json")
    peers = _peers()
    if peers and public_url is None:
        raise ConfigError("PEERS needs PUBLIC_URL: this server's base URL, where its peers send their callbacks")
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise ConfigError("PUBLIC_URL must start with http:// or https://")
    return Settings(
        database_url=url,
        embedded_dir=Path(env("EMBEDDED_PG_DIR", "").strip() or PROJECT_DIR / ".pgdata"),
        max_task_time=int(_number("MAX_TASK_TIME", 3600, int, 1)),
        frontend_url=frontend or ["*"],
        port=int(_number("PORT", 5000, int, 1, 65535)),
        gunicorn_workers=int(_number("GUNICORN_WORKERS", 2, int, 1)),
        gunicorn_threads=int(_number("GUNICORN_THREADS", DEFAULT_GUNICORN_THREADS, int, 1)),
        group_commit=_boolean("GROUP_COMMIT", False),
        max_content_length=int(_number("MAX_CONTENT_LENGTH", 1024 * 1024, int, 1)),
        max_bulk_tasks=int(_number("MAX_BULK_TASKS", 10_000, int, 1)),
        worker_name=env("WORKER_NAME", "").strip() or f"{socket.gethostname()}-{os.getpid()}",
        poll_interval=_number("POLL_INTERVAL", 0.5, float, 0.01),
        listen_notify=_boolean("LISTEN_NOTIFY", True),
        prepare_statements=_boolean("PREPARE_STATEMENTS", True),
        lease_seconds=_number("LEASE_SECONDS", 30.0, float, 1.0),
        batch_size=int(_number("BATCH_SIZE", 1000, int, 1, 10_000)),
        max_attempts=int(_number("MAX_ATTEMPTS", 3, int, 1, 1000)),
        task_timeout=_number("TASK_TIMEOUT", 0, float, 0) or None,
        retry_backoff=_number("RETRY_BACKOFF", 1.0, float, 0),
        shutdown_grace=_number("SHUTDOWN_GRACE", 3.0, float, 0.0),
        janitor_interval=_number("JANITOR_INTERVAL", 10.0, float, 0.01),
        janitor_batch=int(_number("JANITOR_BATCH", 1000, int, 1)),
        tasks_module=_module_names("TASKS_MODULE", "tasks"),
        handler_tasks=handler_tasks,
        handler_exclude_tasks=handler_exclude,
        default_task_type=env("DEFAULT_TASK_TYPE", "echo").strip() or "echo",
        log_level=level,
        jwt_private_pem=_pem("JWT_PRIVATE_PEM", "JWT_PRIVATE_KEY_FILE"),
        jwt_public_pems=_pem("JWT_PUBLIC_PEM", "JWT_PUBLIC_KEY_FILES"),
        jwt_issuer=env("JWT_ISSUER", "").strip() or "flask-tasks",
        jwt_audience=env("JWT_AUDIENCE", "").strip() or "flask-tasks",
        token_lifetime=int(_number("TOKEN_LIFETIME", 900, int, 10, 86_400)),
        jwt_leeway=int(_number("JWT_LEEWAY", 30, int, 0, 300)),
        args_max_depth=int(_number("ARGS_MAX_DEPTH", 32, int, 1, 1000)),
        args_max_bytes=int(_number("ARGS_MAX_BYTES", 256 * 1024, int, 2)),
        max_result_bytes=int(_number("MAX_RESULT_BYTES", 1024 * 1024, int, 4)),
        webhook_secret=_secret("WEBHOOK_SECRET"),
        notify_allow_private=_boolean("NOTIFY_ALLOW_PRIVATE", False),
        webhook_backoff=_number("WEBHOOK_BACKOFF", 30.0, float, 0.0),
        webhook_max_attempts=int(_number("WEBHOOK_MAX_ATTEMPTS", 8, int, 1, 100)),
        webhook_timeout=_number("WEBHOOK_TIMEOUT", 10.0, float, 0.1, 300),
        webhook_concurrency=int(_number("WEBHOOK_CONCURRENCY", 8, int, 1, 256)),
        peers=peers,
        public_url=public_url,
        peer_check_interval=_number("PEER_CHECK_INTERVAL", 60.0, float, 0.1),
        operator_password=env("OPERATOR_PASSWORD", "") or None,
        stats_interval=_number("STATS_INTERVAL", 10.0, float, 0.1),
        schedule=_schedule(),
        log_format=log_format,
    )


def settings_or_exit() -> Settings:
    """Settings for a process entry point: a bad value ends it with one line."""
    try:
        return load_settings()
    except ConfigError as err:
        exit_with(err)


def exit_with(err: ConfigError) -> NoReturn:
    """End a process for a bad setting: one line on stderr, exit code 2."""
    print(f"flask-tasks: configuration error: {err}", file=sys.stderr)
    raise SystemExit(2) from None

"""Settings read once from the environment (and `.env`), checked at start."""

from __future__ import annotations

import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

PROJECT_DIR = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting has a value the server cannot use; the message names it."""


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
    tasks_module: str
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
    return Settings(
        database_url=url,
        embedded_dir=Path(env("EMBEDDED_PG_DIR", "").strip() or PROJECT_DIR / ".pgdata"),
        max_task_time=int(_number("MAX_TASK_TIME", 3600, int, 1)),
        frontend_url=frontend or ["*"],
        port=int(_number("PORT", 5000, int, 1, 65535)),
        gunicorn_workers=int(_number("GUNICORN_WORKERS", 2, int, 1)),
        gunicorn_threads=int(_number("GUNICORN_THREADS", 1, int, 1)),
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
        tasks_module=env("TASKS_MODULE", "tasks").strip() or "tasks",
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
    )


def settings_or_exit() -> Settings:
    """Settings for a process entry point: a bad value ends it with one line."""
    try:
        return load_settings()
    except ConfigError as err:
        print(f"flask-tasks: configuration error: {err}", file=sys.stderr)
        raise SystemExit(2) from None

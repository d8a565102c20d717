"""The HTTP API: create tasks, read them back, list task types."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg2
import psycopg2.extensions
import psycopg2.pool
from flask import Blueprint, Flask, current_app, g, jsonify, request
from flask_cors import CORS
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import HTTPException

from flask_tasks import db
from flask_tasks.auth import AuthError, Keys, allows, bearer_token, issue_token, keys_or_exit, load_keys, verify_token
from flask_tasks.clients import authenticate, clients_cli, decoy_hash
from flask_tasks.config import Settings
from flask_tasks.openapi import docs
from flask_tasks.registry import Registry, TaskArgsError, TaskType
from flask_tasks.startup import start_process
from flask_tasks.stopping import one_line

log = logging.getLogger("flask_tasks.web")
TEN_YEARS = 10 * 365 * 86400.0
YEAR_9999 = 253402300799.0  # the last unix second PostgreSQL's to_timestamp and Python agree on
api = Blueprint("api", __name__)


class ApiError(Exception):
    """An error answered as {"message": ...} with a status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# -- connections ----------------------------------------------------------------


class ConnectionPool:
    """One pool per web worker process; a pool inherited across fork is never used."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _current(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                url = db.database_url(self.settings, "web")
                db.open_connection(self.settings, "web").close()  # the schema, once per process
                # As many connections as threads, kept open (a pool with minconn=0 closes each one it gets back).
                threads = self.settings.gunicorn_threads
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    threads,
                    threads,
                    url,
                    application_name="flask-tasks web",
                    connection_factory=db.PreparingConnection if self.settings.prepare_statements else None,
                    **db.CONNECT_OPTIONS,
                )
                self._pid = os.getpid()
            return self._pool

    def get(self) -> psycopg2.extensions.connection:
        conn = self._current().getconn()
        conn.autocommit = True
        return conn

    def put(self, conn: psycopg2.extensions.connection, broken: bool) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.putconn(conn, close=broken or bool(conn.closed))


def get_db() -> psycopg2.extensions.connection:
    """The request's connection, taken from the pool on first use."""
    if "db" not in g:
        g.db = current_app.extensions["flask_tasks.pool"].get()
    return g.db


def close_db(exc: BaseException | None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        broken = isinstance(exc, db.TRANSIENT_ERRORS) or g.pop("db_broken", False)
        current_app.extensions["flask_tasks.pool"].put(conn, broken)


# -- requests -------------------------------------------------------------------


def request_claims() -> dict[str, Any] | None:
    """The claims of the request's bearer token; None without one; AuthError for a bad one."""
    if "claims" not in g:
        token = bearer_token(request.headers.get("Authorization"))
        keys: Keys = current_app.extensions["flask_tasks.keys"]
        g.claims = None if token is None else verify_token(keys, current_app.config["SETTINGS"], token)
    return g.claims


def request_subject() -> str | None:
    """Whose tasks this request may see besides those posted without a token."""
    claims = request_claims()
    return None if claims is None else claims["sub"]


def json_body() -> Any:
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


def _refuse_constant(name: str) -> None:
    # Python reads NaN and Infinity, but they are not JSON and PostgreSQL refuses them.
    raise ValueError(f"{name} is not a JSON number")


class TaskRequest(BaseModel):
    """The body of POST /task: a task type, its arguments and how to run it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str
    args: dict[str, Any] = {}
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    run_at: Annotated[float, Field(ge=0, le=YEAR_9999)] | None = None
    delay: Annotated[float, Field(ge=0, le=TEN_YEARS)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=1000)] | None = None
    timeout: Annotated[float, Field(gt=0, le=TEN_YEARS)] | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None


REQUEST_FIELDS = ", ".join(TaskRequest.model_fields)


def _request_error(error: Any, known: str = f"a task request has {REQUEST_FIELDS}") -> str:
    field = ".".join(str(part) for part in error["loc"]) or "?"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"the field [{field}] is not known; {known}."
    if kind == "missing":
        return f"the field [{field}] is required."
    if field == "type" and kind == "string_type":
        return "the field [type] must be a string."
    if field == "args" and kind == "dict_type":
        return "the field [args] must be a JSON object."
    return f"the field [{field}] is invalid: {error['msg']}."


@dataclass(frozen=True)
class NewTask:
    request: TaskRequest
    task_type: TaskType
    args: dict[str, Any]  # validated, defaults filled in
    legacy: bool  # the first flask-tasks' body: the arguments alone


def parse_new_task(
    body: Any, registry: Registry, settings: Settings, claims: dict[str, Any] | None, body_bytes: int | None = None
) -> NewTask:
    """A checked task request, or ApiError (AuthError for a protected type) saying what is wrong with it.

    body_bytes: the size of the request body it came in, if known (it may spare measuring the args).
    """
    default_type = settings.default_task_type
    if not isinstance(body, dict):
        raise ApiError(400, 'the request body must be a JSON object, e.g. {"type": "add", "args": {"x": 1, "y": 2}}')
    legacy = "type" not in body
    try:
        # The first flask-tasks had no type: the whole body is the default task's arguments.
        request = TaskRequest(type=default_type, args=body) if legacy else TaskRequest.model_validate(body)
    except ValidationError as err:
        raise ApiError(400, _request_error(err.errors()[0])) from None
    if request.run_at is not None and request.delay is not None:
        raise ApiError(400, "give run_at or delay, not both.")
    task_type = registry.get(request.type)
    if task_type is None:
        raise ApiError(400, f"task type [{request.type}] doesnt exist")
    if task_type.protected:
        if claims is None:
            raise AuthError(401, f"task type [{request.type}] is protected: send Authorization: Bearer <token>")
        if not allows(claims, request.type):
            raise AuthError(403, f"the token does not allow task type [{request.type}]")
    check_args_limits(request.args, settings, body_bytes)
    try:
        return NewTask(request, task_type, task_type.validate(request.args), legacy)
    except TaskArgsError as err:
        raise ApiError(400, str(err)) from None


def check_args_limits(args: dict[str, Any], settings: Settings, body_bytes: int | None = None) -> None:
    """ApiError(400) for arguments nested deeper than ARGS_MAX_DEPTH or larger than ARGS_MAX_BYTES."""
    if not args:  # {}: one level, two bytes
        return
    depth, level = 0, [args]
    while level:
        depth += 1
        if depth > settings.args_max_depth:
            raise ApiError(400, f"the field [args] is nested too deeply: at most {settings.args_max_depth} levels")
        level = [
            child
            for value in level
            for child in (value.values() if isinstance(value, dict) else value)
            if isinstance(child, (dict, list))
        ]
    # A body this small cannot hold args over the limit, even encoded again (the longest growth is
    # a number: 1e15 comes back as 1000000000000000.0): spare encoding them only to measure them.
    if body_bytes is not None and body_bytes * 5 <= settings.args_max_bytes:
        return
    size = len(json.dumps(args, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    if size > settings.args_max_bytes:
        raise ApiError(400, f"the field [args] is {size} bytes of JSON: at most {settings.args_max_bytes}")


def task_fields(new: NewTask, settings: Settings) -> dict[str, Any]:
    """The columns of a new task, as plain values."""
    request, task_type = new.request, new.task_type
    return {
        "type": request.type,
        "args": new.args,
        "max_attempts": request.max_attempts or task_type.max_attempts or settings.max_attempts,
        "timeout": request.timeout or task_type.timeout or settings.task_timeout,
        "priority": request.priority,
        "run_at": request.run_at,
        "delay": request.delay or 0,
        "idempotency_key": request.idempotency_key,
    }


def task_row(task_id: str, new: NewTask, settings: Settings, subject: str | None) -> dict[str, Any]:
    """A new task as insert_tasks takes it."""
    return {"id": task_id, **task_fields(new, settings), "subject": subject}


def task_json(task: dict[str, Any], legacy: bool = False) -> dict[str, Any]:
    """A task as the API shows it; the legacy form also repeats its arguments at the top level."""
    if legacy:
        return {**{k: v for k, v in task["args"].items() if k not in task}, **task}
    return task


@api.post("/task/new")
@api.post("/task")
def create_task():
    """One task from a JSON object, or many at once, all or nothing, from a JSON array of them."""
    app = current_app
    settings: Settings = app.config["SETTINGS"]
    body = json_body()
    if isinstance(body, list):
        return create_tasks(body, settings, app.config["REGISTRY"])
    new = parse_new_task(body, app.config["REGISTRY"], settings, request_claims(), g.body_bytes)
    subject = request_subject()
    row = task_row(new_ids(1)[0], new, settings, subject)
    with storing():
        params = {"tasks": json.dumps([row]), "max_task_time": settings.max_task_time}
        times = {task_id: rest for task_id, *rest in db.run(get_db(), "insert_tasks", params)}.get(row["id"])
        if times is None:  # the idempotency key is taken: answer with the task it made
            return json_response(dumps(task_json(existing_task(new, settings, subject), new.legacy)), 200)
    return json_response(dumps(task_json(inserted_task(row, times), new.legacy)), 201)


def create_tasks(bodies: list[Any], settings: Settings, registry: Registry):
    if not bodies:
        raise ApiError(400, "the array of tasks is empty.")
    if len(bodies) > settings.max_bulk_tasks:
        raise ApiError(400, f"at most {settings.max_bulk_tasks} tasks in one request (MAX_BULK_TASKS).")
    news = []
    claims = request_claims()
    for index, body in enumerate(bodies):
        try:
            news.append(parse_new_task(body, registry, settings, claims, g.body_bytes))
        except ApiError as err:
            raise ApiError(err.status, f"task [{index}]: {err.message}") from None
        except AuthError as err:
            raise AuthError(err.status, f"task [{index}]: {err.message}") from None
    subject = request_subject()
    rows = [task_row(task_id, new, settings, subject) for task_id, new in zip(new_ids(len(news)), news, strict=True)]
    params = {"tasks": json.dumps(rows), "max_task_time": settings.max_task_time}
    # One transaction: a 409 below must leave none of them stored.
    with storing(), get_db():
        stored = {task_id: rest for task_id, *rest in db.run(get_db(), "insert_tasks", params)}
        tasks = []
        for row, new in zip(rows, news, strict=True):
            times = stored.get(row["id"])
            if times is not None:
                tasks.append(task_json(inserted_task(row, times), new.legacy))
            else:  # its idempotency key was taken: the task it made stands in
                tasks.append(task_json(existing_task(new, settings, subject), new.legacy))
    return json_response(dumps(tasks), 201)


def existing_task(new: NewTask, settings: Settings, subject: str | None) -> dict[str, Any]:
    """The task an earlier request made with this one's idempotency key; 409 if it is another task."""
    rows = db.run_dicts(get_db(), "get_task_by_idempotency_key", {**task_fields(new, settings), "subject": subject})
    if not rows:  # it expired and was deleted just now
        raise ApiError(409, "an idempotency key was in use a moment ago; send the request again")
    check_same_task(rows[0], new)
    return rows[0]


def inserted_task(row: dict[str, Any], times: list[int]) -> dict[str, Any]:
    """A task just inserted, as get_task would read it back: what was sent, and the times PostgreSQL set.

    Built here rather than returned by the insert: PostgreSQL's row_to_json cost more
    than the insert itself (9 of 22 µs a task in a bulk request).
    """
    created, run_at, expire = times
    return {
        "id": row["id"],
        "type": row["type"],
        "args": row["args"],
        "status": "waiting",
        "result": None,
        "error": None,
        "last_error": None,
        "attempts": 0,
        "max_attempts": row["max_attempts"],
        "priority": row["priority"],
        "timeout": None if row["timeout"] is None else float(row["timeout"]),  # a float8 column
        "idempotency_key": row["idempotency_key"],
        "cancel_requested": False,
        "worker": None,
        "created": created,
        "run_at": run_at,
        "started": None,
        "finished": None,
        "expire": expire,
    }


def dumps(value: Any) -> str:
    # Answers are built from parsed JSON and database rows, which cannot hold a cycle:
    # skipping the encoder's cycle check makes a 1,000-task answer a quarter cheaper.
    return json.dumps(value, separators=(",", ":"), check_circular=False)


def json_response(text: str, status: int):
    return current_app.response_class(text + "\n", status, mimetype="application/json")


def new_ids(count: int) -> list[str]:
    """Random (version 4) UUIDs as text, from one read of os.urandom: uuid4() reads it once per id."""
    raw = bytearray(os.urandom(16 * count))
    ids = []
    for start in range(0, 16 * count, 16):
        raw[start + 6] = (raw[start + 6] & 0x0F) | 0x40  # version 4
        raw[start + 8] = (raw[start + 8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw[start : start + 16].hex()
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


def check_same_task(existing: dict[str, Any], new: NewTask) -> None:
    """A reused idempotency key must come with the same task, or it is a client's mistake."""
    if existing["type"] != new.request.type or existing["args"] != new.args:
        raise ApiError(409, f"the idempotency key [{new.request.idempotency_key}] was used for a different task")


@contextlib.contextmanager
def storing() -> Any:
    """Turn values PostgreSQL will not store into a 400."""
    try:
        yield
    except (psycopg2.DataError, UnicodeEncodeError, ValueError) as err:  # "\u0000", a lone surrogate, a NUL
        reason = db.error_text(err) if isinstance(err, psycopg2.Error) else one_line(err)
        raise ApiError(400, f"the request holds a value that cannot be stored: {reason}") from None


def find_task(task_id: str) -> dict[str, Any]:
    try:
        key = uuid.UUID(task_id)
    except ValueError:
        raise ApiError(404, f"task [{task_id}] not found: task ids are UUIDs") from None
    # Another subject's task answers as if it did not exist: 404, not 403.
    subject = request_subject()  # a bad token is a 401 before any database work
    rows = db.run_dicts(get_db(), "get_task", {"id": key, "subject": subject})
    if not rows:
        seconds = current_app.config["SETTINGS"].max_task_time
        raise ApiError(404, f"task [{task_id}] not found: it may have expired (tasks are kept {seconds} s)")
    return rows[0]


@api.post("/task/<task_id>/cancel")
def cancel_task(task_id: str):
    """Cancel a waiting task at once; ask a running one to stop. 409 if it has finished."""
    task = find_task(task_id)
    keep = current_app.config["SETTINGS"].max_task_time
    rows = db.run_dicts(get_db(), "cancel_task", {"id": task["id"], "keep": keep, "subject": request_subject()})
    if not rows:
        raise ApiError(409, f"task [{task_id}] has already finished: it is {task['status']}")
    return jsonify(task_json(rows[0]))


@api.get("/task/<task_id>")
def get_task(task_id: str):
    return jsonify(task_json(find_task(task_id)))


@api.get("/task/<task_id>/view")
def view_task(task_id: str):
    return jsonify(task_json(find_task(task_id), legacy=True))


@api.get("/tasks")
def list_task_types():
    return jsonify(current_app.config["REGISTRY"].describe())


# -- tokens ---------------------------------------------------------------------


class TokenRequest(BaseModel):
    """The body of POST /token: client credentials (or send them with HTTP Basic auth)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    client_id: Annotated[str, Field(min_length=1, max_length=200)]
    client_secret: Annotated[str, Field(min_length=1, max_length=1000)]


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
        raise ApiError(400, _request_error(err.errors()[0], known)) from None


@api.post("/token")
def create_token():
    """A short-lived token for a client whose credentials are right; its claims list the tasks it may run."""
    credentials = token_credentials()
    settings: Settings = current_app.config["SETTINGS"]
    keys: Keys = current_app.extensions["flask_tasks.keys"]
    keys.signer()  # a server that cannot sign says so before any scrypt work
    tasks = authenticate(get_db(), credentials.client_id, credentials.client_secret)
    token, exp = issue_token(keys, settings, credentials.client_id, tasks)
    response = jsonify(
        access_token=token,
        token_type="Bearer",
        expires_in=exp - int(time.time()),
        allowed_tasks={name: True for name in tasks},
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@api.get("/protected")
def protected_tasks():
    """What the request's token allows: {"allowed_tasks": {...}, "exp": ...}, as in flask-tasks v2."""
    claims = request_claims()
    if claims is None:
        raise AuthError(401, "send Authorization: Bearer <token>; get one at POST /token")
    allowed = {name: True for name, value in claims.get("allowed_tasks", {}).items() if value is True}
    response = jsonify(allowed_tasks=allowed, exp=claims["exp"])
    response.headers["Cache-Control"] = "no-store"
    return response


@api.get("/.well-known/jwks.json")
def public_keys():
    """The public keys tokens are checked with, so other services can check them too."""
    return jsonify(current_app.extensions["flask_tasks.keys"].jwks())


# -- errors: always {"message": ...}, never a traceback -------------------------------


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
    return jsonify(message=err.message), err.status, headers


# On every response: no content sniffing, no framing, no referrer; HTML pages (the docs)
# may load scripts, styles and data only from this server.
JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"
HTML_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


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


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> Flask:
    """The Flask app. Without arguments, settings and tasks come from the environment."""
    if settings is None or registry is None:
        settings, registry = start_process()
        keys = keys_or_exit(settings)
    else:
        keys = load_keys(settings)  # a test's settings: let it see the ConfigError
    app = Flask(__name__)
    app.config.update(SETTINGS=settings, REGISTRY=registry, MAX_CONTENT_LENGTH=settings.max_content_length)
    app.json.sort_keys = False
    app.extensions["flask_tasks.pool"] = ConnectionPool(settings)
    app.extensions["flask_tasks.keys"] = keys
    if keys.signing is not None:
        decoy_hash()  # now rather than in the first request for an unknown client id
    # Tokens travel in the Authorization header, never in cookies: no credentialed CORS.
    anyone = "*" in settings.frontend_url
    CORS(
        app,
        origins="*" if anyone else settings.frontend_url,
        send_wildcard=anyone,
        supports_credentials=False,
        expose_headers=["WWW-Authenticate", "Retry-After"],
    )
    app.after_request(security_headers)
    app.cli.add_command(clients_cli)
    app.register_blueprint(api)
    app.register_blueprint(docs)
    app.teardown_appcontext(close_db)
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(AuthError, handle_auth_error)
    app.register_error_handler(HTTPException, handle_http_error)
    for error in (*db.TRANSIENT_ERRORS, psycopg2.pool.PoolError):
        app.register_error_handler(error, handle_database_down)
    app.register_error_handler(Exception, handle_unexpected)
    return app

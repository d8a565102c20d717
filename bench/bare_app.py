"""The baselines for (d): bare Flask apps that read the JSON body as flask-tasks does.

`gunicorn bench.bare_app:app -w 2`: POST /task/new answers {"ok": true} with 201 and stores
nothing (the web stack's ceiling).
`gunicorn bench.bare_app:insert_app -w 2`: the same, plus one plain INSERT of the task into
`tasks` with a durable commit (BARE_DATABASE_URL), answering its id: what one round trip
to PostgreSQL costs, with no validation, pool or task fields of ours.
"""

from __future__ import annotations

import json
import os

import psycopg2
from flask import Flask, Response, jsonify, request

app = Flask(__name__)
insert_app = Flask(__name__)
_connection = None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _read_body() -> tuple[object, Response | None]:
    if not request.is_json:
        return None, jsonify(message="the request body must be JSON")
    try:
        return json.loads(request.get_data(cache=False), parse_constant=_refuse_constant), None
    except (ValueError, UnicodeDecodeError) as err:
        return None, jsonify(message=f"the request body is not valid JSON: {err}")


@app.post("/task/new")
def create_task() -> tuple[Response, int]:
    _, error = _read_body()
    if error is not None:
        return error, 400
    return jsonify(ok=True), 201


@insert_app.post("/task/new")
def insert_task() -> tuple[Response, int]:
    global _connection
    body, error = _read_body()
    if error is not None:
        return error, 400
    if _connection is None:  # one per worker, opened after the fork
        _connection = psycopg2.connect(os.environ["BARE_DATABASE_URL"])
        _connection.autocommit = True
    with _connection.cursor() as cur:
        cur.execute(
            "INSERT INTO tasks (type, args, expire) VALUES (%s, %s, now() + interval '1 hour') RETURNING id::text",
            (body["type"], json.dumps(body["args"])),
        )
        (task_id,) = cur.fetchone()
    return jsonify(id=task_id), 201

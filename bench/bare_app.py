"""The baselines for (d): bare Flask apps that read the JSON body as flask-tasks does.

`gunicorn bench.bare_app:app -w 2`: POST /task/new answers {"ok": true} with 201 and stores
nothing (the web stack's ceiling).
`gunicorn bench.bare_app:insert_app -w 2`: the same, plus one plain INSERT of the task into
`tasks` with a durable commit (BARE_DATABASE_URL), answering its id: what one round trip
to PostgreSQL costs, with no validation, pool or task fields of ours.
`gunicorn bench.bare_app:group_app -w 2 --threads 8`: the same INSERT, but group-committed:
request threads hand their task to one writer thread per worker, which stores every task
waiting at that moment in one statement and one durable commit, then answers them all.
The best a server that commits each request's task before answering can hope for from
batching on this stack, with no validation or task fields of ours.
"""

from __future__ import annotations

import json
import os
import threading
import uuid

import psycopg2
from flask import Flask, Response, jsonify, request

app = Flask(__name__)
insert_app = Flask(__name__)
group_app = Flask(__name__)
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


class GroupWriter:
    """One writer thread per worker process: each round stores every waiting task in one commit.

    Each request names its task's id (a random UUID it makes), so no answer depends on
    the order in which PostgreSQL returns the inserted rows.
    """

    INSERT = (
        "INSERT INTO tasks (id, type, args, expire) SELECT t.id, t.type, t.args, now() + interval '1 hour'"
        " FROM jsonb_to_recordset(%s::jsonb) AS t(id uuid, type text, args jsonb)"
    )
    ANSWER_WITHIN = 10.0  # seconds a request waits for its commit before it fails

    def __init__(self) -> None:
        self.ready = threading.Condition()
        self.waiting: list[tuple[dict, threading.Event, list]] = []
        self.pid = 0

    def store(self, task: dict) -> str:
        task = {"id": str(uuid.uuid4()), **task}
        done, failure = threading.Event(), []
        with self.ready:
            if self.pid != os.getpid():  # started after the fork, once per worker
                self.pid = os.getpid()
                threading.Thread(target=self._write, daemon=True).start()
            self.waiting.append((task, done, failure))
            self.ready.notify()
        if not done.wait(self.ANSWER_WITHIN):
            raise RuntimeError("the group insert did not answer in time")
        if failure:
            raise RuntimeError(f"the group insert failed: {failure[0]}")
        return task["id"]

    def _write(self) -> None:
        conn = None
        while True:
            with self.ready:
                while not self.waiting:
                    self.ready.wait()
                batch, self.waiting = self.waiting, []
            try:
                if conn is None:
                    conn = psycopg2.connect(os.environ["BARE_DATABASE_URL"])
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(self.INSERT, (json.dumps([task for task, _, _ in batch]),))
            except Exception as err:  # the batch fails; the next one reconnects
                for _, _, failure in batch:
                    failure.append(err)
                if conn is not None:
                    conn.close()
                conn = None
            for _, done, _ in batch:
                done.set()


_group_writer = GroupWriter()


@group_app.post("/task/new")
def group_insert_task() -> tuple[Response, int]:
    body, error = _read_body()
    if error is not None:
        return error, 400
    return jsonify(id=_group_writer.store({"type": body["type"], "args": body["args"]})), 201

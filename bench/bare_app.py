"""The baseline for (d): a bare Flask app that reads the JSON body as flask-tasks does and stores nothing.

`gunicorn bench.bare_app:app -w 2`. POST /task/new answers {"ok": true} with 201.
"""

from __future__ import annotations

import json

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


@app.post("/task/new")
def create_task() -> tuple[Response, int]:
    if not request.is_json:
        return jsonify(message="the request body must be JSON"), 415
    try:
        json.loads(request.get_data(cache=False), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as err:
        return jsonify(message=f"the request body is not valid JSON: {err}"), 400
    return jsonify(ok=True), 201

"""The API's contract: GET /openapi.json (OpenAPI 3.1) and GET /docs, a page served with its own assets."""

from __future__ import annotations

from flask import Blueprint

docs = Blueprint("docs", __name__)

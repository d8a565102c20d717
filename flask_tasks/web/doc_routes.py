"""The API's contract: GET /openapi.json (OpenAPI 3.1), put together from each blueprint's part, and GET /docs.

/docs is Swagger UI from the flask-swagger-ui package's files, served by this blueprint: no CDN, and
no inline script or style, so it works under a strict Content-Security-Policy. The document is built
once per app and kept in app.extensions.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, current_app, send_from_directory, url_for

import flask_tasks
from flask_tasks.config import Settings
from flask_tasks.registry import Registry
from flask_tasks.web.apidoc import JSON, json_answer

docs = Blueprint("docs", __name__)

OPENAPI_VERSION = "3.1.0"
CACHE_KEY = "flask_tasks.openapi"
PARTS_KEY = "flask_tasks.document_parts"  # create_app lists each blueprint's document_part here
TAGS = [
    {"name": "tasks", "description": "Create tasks and follow them."},
    {"name": "auth", "description": "Tokens for protected task types."},
    {"name": "docs", "description": "This document and a page to browse it."},
]

DocumentPart = Callable[[Registry, Settings], dict[str, Any]]


def openapi_document(registry: Registry, settings: Settings, parts: list[DocumentPart]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route: each blueprint's schemas and paths, then this one's."""
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {"message": {"type": "string", "minLength": 1}},
            "required": ["message"],
            "additionalProperties": False,
        },
    }
    paths: dict[str, Any] = {}
    tags = list(TAGS)
    for part in parts:
        piece = part(registry, settings)
        schemas.update(piece["schemas"])
        for path, operations in piece["paths"].items():  # two blueprints may serve one path (GET and POST /task)
            paths.setdefault(path, {}).update(operations)
        tags.extend(piece.get("tags", []))
    paths.update(_paths())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "flask-tasks",
            "version": flask_tasks.__version__,
            "description": _description(registry),
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from POST /token.",
                },
                "operatorPassword": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "OPERATOR_PASSWORD as the password (any user name).",
                },
                "clientCredentials": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Client id as the user, client secret as the password.",
                },
            },
        },
    }


def _description(registry: Registry) -> str:
    protected = registry.protected_names()
    lines = [
        "A PostgreSQL-backed task server: POST a task, GET it back until it is done.",
        "",
        'Every error is JSON `{"message": ...}`. Any operation may answer 503 while the database is down.',
        "",
        "Values are checked strictly: an integer is written without a fraction (`1`, not `1.0`), a number is "
        "never a string, and strings may not hold what PostgreSQL cannot store (`\\u0000`, a lone surrogate): "
        "each of these is a 400.",
        "",
        f"Task types: {', '.join(registry.names()) or 'none'}.",
    ]
    if protected:
        lines.append(f"Protected (need a bearer token that allows them): {', '.join(protected)}.")
    return "\n".join(lines)


def _paths() -> dict[str, Any]:
    return {
        "/openapi.json": {
            "get": {
                "tags": ["docs"],
                "operationId": "getOpenapi",
                "summary": "This document",
                "responses": {"200": json_answer({"type": "object"}, "The OpenAPI 3.1 document.")},
            }
        },
        "/docs": {
            "get": {
                "tags": ["docs"],
                "operationId": "getDocs",
                "summary": "A page to browse this document (Swagger UI)",
                "responses": {
                    "200": {"description": "HTML.", "content": {"text/html": {"schema": {"type": "string"}}}}
                },
            }
        },
    }


def document_json(app: Any = None) -> bytes:
    """The app's document as JSON, built on first use and kept in app.extensions."""
    app = app or current_app
    cached = app.extensions.get(CACHE_KEY)
    if cached is None:
        document = openapi_document(app.config["REGISTRY"], app.config["SETTINGS"], app.extensions[PARTS_KEY])
        cached = app.extensions[CACHE_KEY] = json.dumps(document, indent=1).encode()
    return cached


@docs.get("/openapi.json")
def openapi_json() -> Response:
    return current_app.response_class(document_json(), mimetype=JSON)


# -- /docs: Swagger UI --------------------------------------------------------------


def swagger_ui_dir() -> Path:
    import flask_swagger_ui

    return Path(flask_swagger_ui.__file__).resolve().parent / "dist"


OWN_ASSETS_DIR = Path(__file__).resolve().parent.parent / "docs_assets"
# name -> (folder, MIME type); nothing else is served.
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": ("swagger", "text/javascript"),
    "swagger-ui.css": ("swagger", "text/css"),
    "favicon-32x32.png": ("swagger", "image/png"),
    "favicon-16x16.png": ("swagger", "image/png"),
    "docs-init.js": ("own", "text/javascript"),
    "docs.css": ("own", "text/css"),
}
ASSET_MAX_AGE = 3600

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flask-tasks API</title>
<link rel="stylesheet" href="{css}">
<link rel="stylesheet" href="{own_css}">
<link rel="icon" type="image/png" sizes="32x32" href="{icon32}">
<link rel="icon" type="image/png" sizes="16x16" href="{icon16}">
</head>
<body>
<div id="swagger-ui" data-url="{spec}"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""


@docs.get("/docs")
def docs_page() -> Response:
    def asset(name: str) -> str:
        return html.escape(url_for("docs.docs_asset", name=name))

    page = PAGE.format(
        css=asset("swagger-ui.css"),
        own_css=asset("docs.css"),
        icon32=asset("favicon-32x32.png"),
        icon16=asset("favicon-16x16.png"),
        spec=html.escape(url_for("docs.openapi_json")),
        bundle=asset("swagger-ui-bundle.js"),
        init=asset("docs-init.js"),
    )
    return current_app.response_class(page, mimetype="text/html")


@docs.get("/docs/assets/<name>")
def docs_asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    folder, mimetype = ASSETS[name]
    directory = swagger_ui_dir() if folder == "swagger" else OWN_ASSETS_DIR
    return send_from_directory(directory, name, mimetype=mimetype, max_age=ASSET_MAX_AGE)

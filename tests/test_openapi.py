"""The API document (GET /openapi.json) and the page that browses it (GET /docs).

The document must be valid OpenAPI 3.1, name every route, follow the task registry, and agree
with the server: what it calls valid is accepted, what it calls invalid is refused, and every
answer has a status, content type and body it documents.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from flask_tasks import db
from flask_tasks.models import OPTION_FIELDS, TaskRequest, TaskRequestFields
from flask_tasks.registry import Registry
from flask_tasks.web import create_app
from flask_tasks.web import doc_routes as openapi

NOT_DOCUMENTED = {"static", "docs.docs_asset"}  # files, not API operations
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # answered by Flask itself for every route


def get_document(client) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert r.mimetype == "application/json"
    return r.json


def schema_in(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema whose "#/components/..." references resolve within the document."""
    return {**schema, "components": document["components"]}


def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        schema_in(document, schema), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def body_schema(document: dict[str, Any], path: str = "/task") -> dict[str, Any]:
    return document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def assert_documented(document: dict[str, Any], method: str, path: str, response) -> None:
    """The response's status, content type, headers and body are what the document says for this operation."""
    operation = document["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path}: {status} is not documented: {response.get_data()}"
    documented = operation["responses"][status]
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, f"{method} {path} {status}: no {name} header"
    (content_type, media), *_ = documented["content"].items()
    assert response.mimetype == content_type
    if content_type == "application/json":
        errors = list(validator(document, media["schema"]).iter_errors(response.json))
        assert not errors, f"{method} {path} {status}: {errors[0].message} in {response.json}"


def flask_path(rule: str) -> str:
    """/task/<task_id> -> /task/{task_id}"""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


# -- the document itself -------------------------------------------------------------


def test_document_is_valid_openapi_3_1(client):
    document = get_document(client)
    assert document["openapi"] == "3.1.0"
    validate(document, cls=OpenAPIV31SpecValidator)


def test_every_route_is_documented_and_nothing_else(app, client):
    document = get_document(client)
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in NOT_DOCUMENTED:
            continue
        for method in rule.methods - IGNORED_METHODS:
            routes.add((method.lower(), flask_path(rule.rule)))
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert routes == documented
    for required in ("/task", "/task/new", "/task/{task_id}", "/task/{task_id}/view", "/task/{task_id}/cancel"):
        assert required in document["paths"]
    for required in ("/tasks", "/protected", "/token", "/.well-known/jwks.json", "/openapi.json", "/docs"):
        assert required in document["paths"]
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_every_api_error_is_documented_as_a_message(client):
    document = get_document(client)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path in ("/openapi.json", "/docs"):
                continue
            assert "503" in operation["responses"], f"{method} {path}"
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"


def test_each_task_type_has_its_argument_schema(client, registry):
    document = get_document(client)
    schemas = document["components"]["schemas"]
    requests = {}
    for ref in schemas["TaskRequest"]["oneOf"]:
        request = schemas[ref["$ref"].rsplit("/", 1)[1]]
        requests[request["properties"]["type"]["const"]] = request
    assert sorted(requests) == registry.names()
    for name in registry.names():
        task_type = registry.get(name)
        request = requests[name]
        args = schemas[request["properties"]["args"]["$ref"].rsplit("/", 1)[1]]
        model = task_type.model.model_json_schema()
        assert args["properties"] == model["properties"]
        assert args["additionalProperties"] is False
        assert args.get("required", []) == model.get("required", [])
        assert request["additionalProperties"] is False
        assert set(request["properties"]) == {"type", "args", *OPTION_FIELDS} - {"peer"}  # peer: PeerTaskRequest
        assert ("args" in request["required"]) == bool(model.get("required"))
        assert request.get("x-protected", False) is task_type.protected
        assert args.get("x-protected", False) is task_type.protected
        if task_type.protected:
            assert "Bearer" in request["description"]
    assert registry.protected_names(), "the test registry has a protected type"


def test_the_legacy_body_is_the_default_type_arguments(client, settings):
    document = get_document(client)
    schemas = document["components"]["schemas"]
    assert settings.default_task_type == "echo"
    assert schemas["LegacyTaskRequest"]["allOf"] == [{"$ref": "#/components/schemas/echo_args"}]
    assert schemas["NewTasks"]["maxItems"] == settings.max_bulk_tasks
    assert schemas["NewTasks"]["minItems"] == 1


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: float
    y: float


class Token(BaseModel):  # the name of one of the document's own schemas
    value: str


GreenColour = enum.Enum("Colour", {"GREEN": "green"})  # the same name as the other model, another schema


def test_the_document_follows_the_registry(settings):
    reg = Registry()

    @reg.task
    def frobnicate(level: Annotated[int, Field(ge=2, le=7)], colour: Colour, label: str = "x") -> str:
        """Frobnicate at a level."""
        return label * level

    @reg.task(name="plot", protected=True)
    def plot_points(points: list[Point], colour: Colour) -> int:
        return len(points)

    @reg.task
    def paint(colour: GreenColour) -> str:
        return colour.value

    @reg.task
    def spend(token: Token) -> str:
        return token.value

    document = get_document(create_app(settings, reg).test_client())
    validate(document, cls=OpenAPIV31SpecValidator)
    schemas = document["components"]["schemas"]
    assert "add_args" not in schemas and "echo_args" not in schemas
    assert "LegacyTaskRequest" not in schemas  # there is no echo task here: no legacy body
    assert schemas["frobnicate_args"]["properties"]["level"] == {
        "maximum": 7,
        "minimum": 2,
        "title": "Level",
        "type": "integer",
    }
    assert schemas["frobnicate_args"]["description"] == "Frobnicate at a level."
    assert schemas["frobnicate_args"]["required"] == ["level", "colour"]
    # Models the arguments use are lifted into components; one of the same name but another shape is renamed.
    assert schemas["frobnicate_args"]["properties"]["colour"] == {"$ref": "#/components/schemas/Colour"}
    assert schemas["Colour"]["enum"] == ["red", "blue"]
    assert schemas["plot_args"]["properties"]["points"]["items"] == {"$ref": "#/components/schemas/Point"}
    assert set(schemas["Point"]["properties"]) == {"x", "y"}
    renamed = schemas["paint_args"]["properties"]["colour"]["$ref"].rsplit("/", 1)[1]
    assert renamed != "Colour" and schemas[renamed]["enum"] == ["green"]
    assert "access_token" in schemas["Token"]["properties"]  # the API's own Token is kept
    renamed = schemas["spend_args"]["properties"]["token"]["$ref"].rsplit("/", 1)[1]
    assert renamed != "Token" and set(schemas[renamed]["properties"]) == {"value"}
    assert schemas["plot_request"]["x-protected"] is True
    assert "plot" in document["info"]["description"]

    check = validator(document, body_schema(document))
    assert check.is_valid({"type": "frobnicate", "args": {"level": 3, "colour": "red"}})
    assert not check.is_valid({"type": "frobnicate", "args": {"level": 8, "colour": "red"}})
    assert not check.is_valid({"type": "frobnicate", "args": {"level": 3, "colour": "green"}})
    assert check.is_valid({"type": "paint", "args": {"colour": "green"}})
    assert check.is_valid([{"type": "plot", "args": {"points": [{"x": 1, "y": 2.5}], "colour": "blue"}}])
    assert not check.is_valid({"type": "add", "args": {"x": 1, "y": 2}})
    examples = document["paths"]["/task"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert examples["frobnicate"]["value"] == {"type": "frobnicate", "args": {"level": 2, "colour": "red"}}
    assert examples["plot"]["value"] == {"type": "plot", "args": {"points": [{"x": 1.0, "y": 1.0}], "colour": "red"}}
    for example in examples.values():
        check.validate(example["value"])


def test_the_document_is_built_once_per_app(settings, registry, monkeypatch):
    calls = []
    build = openapi.openapi_document
    monkeypatch.setattr(openapi, "openapi_document", lambda *a: calls.append(1) or build(*a))
    app = create_app(settings, registry)
    client = app.test_client()
    first = client.get("/openapi.json").get_data()
    assert client.get("/openapi.json").get_data() == first
    assert len(calls) == 1
    other = create_app(settings, registry).test_client()  # another app builds its own
    assert other.get("/openapi.json").get_data() == first
    assert len(calls) == 2


# -- the document agrees with the server ------------------------------------------------

ACCEPTED = [
    {"type": "add", "args": {"x": 1, "y": 2}},
    {"type": "noop"},
    {"type": "noop", "args": {}},
    {"required_arg": "legacy"},
    {"type": "divide", "args": {"x": 1, "y": 2.5}, "priority": -1000, "delay": 0},
    {"type": "sleep", "args": {"seconds": 1}, "priority": 5, "delay": 10, "max_attempts": 2, "timeout": 3.5},
    {"type": "noop", "run_at": 4102444800, "delay": None, "idempotency_key": "k" * 255},
    {"type": "mov3d", "args": {"dt": 0.1, "r0": [0, 0, 1], "v0": [1, 0, 1.5], "mass": 1, "radius": 0.1}},
    [{"type": "noop"}, {"required_arg": "x"}, {"type": "fibonacci", "args": {"n": 10}}],
]
REFUSED = [
    {"type": "add", "args": {"x": "1", "y": 2}},
    {"type": "add", "args": {"x": 1.5, "y": 2}},
    {"type": "add", "args": {"x": 1}},
    {"type": "add"},
    {"type": "add", "args": {"x": 1, "y": 2, "z": 3}},
    {"type": "nope"},
    {"type": 5},
    {"type": "noop", "priority": 1001},
    {"type": "noop", "priority": True},
    {"type": "noop", "run_at": 1, "delay": 1},
    {"type": "noop", "delay": -1},
    {"type": "noop", "timeout": 0},
    {"type": "noop", "max_attempts": 0},
    {"type": "noop", "idempotency_key": ""},
    {"type": "noop", "idempotency_key": "k" * 256},
    {"type": "noop", "extra": 1},
    {"type": "fibonacci", "args": {"n": 10_001}},
    {"type": "mov3d", "args": {"dt": 0.1, "r0": [0, 0], "v0": [1, 0, 1], "mass": 1, "radius": 0.1}},
    {"required_arg": 5},
    {"required_arg": "x", "extra": 1},
    {},
    [],
    [{"type": "noop"}, {"type": "nope"}],
    "a string",
    5,
    None,
]


@pytest.mark.parametrize("body", ACCEPTED, ids=lambda b: json.dumps(b)[:60])
def test_a_body_the_document_calls_valid_is_accepted(client, body):
    document = get_document(client)
    validator(document, body_schema(document)).validate(body)
    for path in ("/task", "/task/new"):
        r = client.post(path, json=body)
        assert r.status_code in (200, 201), r.get_data(as_text=True)
        assert_documented(document, "POST", path, r)


@pytest.mark.parametrize("body", REFUSED, ids=lambda b: json.dumps(b)[:60])
def test_a_body_the_document_calls_invalid_is_refused(client, conn, body):
    document = get_document(client)
    assert not validator(document, body_schema(document)).is_valid(body)
    r = client.post("/task", data=json.dumps(body), content_type="application/json")
    assert r.status_code == 400, r.get_data(as_text=True)
    assert_documented(document, "POST", "/task", r)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM tasks")
        assert cur.fetchone() == (0,)


def test_the_request_examples_are_valid_and_accepted(client, registry):
    document = get_document(client)
    media = document["paths"]["/task"]["post"]["requestBody"]["content"]["application/json"]
    check = validator(document, media["schema"])
    examples = media["examples"]
    assert set(registry.names()) | {"legacy", "bulk"} == set(examples)
    for name, example in examples.items():
        body = example["value"]
        check.validate(body)
        r = client.post("/task", json=body)
        protected = name in registry.protected_names()
        assert r.status_code == (401 if protected else 201), (name, r.get_data(as_text=True))
        assert_documented(document, "POST", "/task", r)
    assert isinstance(examples["bulk"]["value"], list) and "type" not in examples["legacy"]["value"]


def test_a_protected_type_is_valid_but_needs_a_token(client):
    document = get_document(client)
    body = {"type": "multiply", "args": {"x": 6, "y": 7}}
    assert validator(document, body_schema(document)).is_valid(body)
    r = client.post("/task", json=body)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert_documented(document, "POST", "/task", r)
    r = client.post("/task", json=body, headers={"Authorization": "Bearer not-a-token"})
    assert_documented(document, "POST", "/task", r)


def test_every_answer_about_tasks_is_documented(client):
    document = get_document(client)
    r = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "once"})
    assert r.status_code == 201
    assert_documented(document, "POST", "/task", r)
    task_id = r.json["id"]
    again = client.post("/task", json={"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "once"})
    assert again.status_code == 200 and again.json["id"] == task_id
    assert_documented(document, "POST", "/task", again)
    other = client.post("/task", json={"type": "add", "args": {"x": 2, "y": 2}, "idempotency_key": "once"})
    assert other.status_code == 409
    assert_documented(document, "POST", "/task", other)

    legacy = client.post("/task/new", json={"required_arg": "hi"})
    assert legacy.json["required_arg"] == "hi"
    assert_documented(document, "POST", "/task/new", legacy)
    bulk = client.post("/task", json=[{"type": "noop"}, {"required_arg": "x"}])
    assert bulk.status_code == 201 and len(bulk.json) == 2
    assert_documented(document, "POST", "/task", bulk)

    for path in ("/task/{task_id}", "/task/{task_id}/view"):
        for some_id in (task_id, legacy.json["id"], str(uuid.uuid4()), "not-a-uuid"):
            assert_documented(document, "GET", path, client.get(path.format(task_id=some_id)))
        r = client.get(path.format(task_id=task_id), headers={"Authorization": "Bearer nonsense"})
        assert r.status_code == 401
        assert_documented(document, "GET", path, r)
    view = client.get(f"/task/{legacy.json['id']}/view")
    assert view.json["required_arg"] == "hi"
    with pytest.raises(AssertionError, match="Additional properties"):
        assert_documented(document, "GET", "/task/{task_id}", view)  # only the view may add fields

    cancelled = client.post(f"/task/{task_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert_documented(document, "POST", "/task/{task_id}/cancel", cancelled)
    finished = client.post(f"/task/{task_id}/cancel")
    assert finished.status_code == 409
    assert_documented(document, "POST", "/task/{task_id}/cancel", finished)
    assert_documented(document, "POST", "/task/{task_id}/cancel", client.post(f"/task/{uuid.uuid4()}/cancel"))

    assert_documented(document, "GET", "/tasks", client.get("/tasks"))
    assert_documented(document, "POST", "/task", client.post("/task", data="{", content_type="application/json"))
    assert_documented(document, "POST", "/task", client.post("/task", data="{}", content_type="text/plain"))


def test_every_answer_about_tokens_is_documented(client):
    document = get_document(client)
    r = client.get("/protected")
    assert r.status_code == 401
    assert_documented(document, "GET", "/protected", r)
    assert_documented(document, "GET", "/protected", client.get("/protected", headers={"Authorization": "Basic x"}))
    assert_documented(document, "GET", "/.well-known/jwks.json", client.get("/.well-known/jwks.json"))
    for body in ({"client_id": "who", "client_secret": "what"}, {"client_id": 5}, [], {}):
        assert_documented(document, "POST", "/token", client.post("/token", json=body))
    assert_documented(document, "POST", "/token", client.post("/token", auth=("who", "what")))
    assert_documented(document, "POST", "/token", client.post("/token", data="x", content_type="text/plain"))


def test_every_answer_with_a_token_is_documented(settings, registry):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    app = create_app(dataclasses.replace(settings, jwt_private_pem=pem.decode()), registry)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "192.0.2.10"  # not loopback, which would be an operator's and see every task
    document = get_document(client)
    added = app.test_cli_runner().invoke(args=["clients", "add", "docs-client", "--tasks", "multiply"])
    assert added.exit_code == 0, added.output
    secret = dict(line.split(": ", 1) for line in added.output.splitlines() if ": " in line)["client_secret"]

    r = client.post("/token", json={"client_id": "docs-client", "client_secret": secret})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert_documented(document, "POST", "/token", r)
    token = {"Authorization": f"Bearer {r.json['access_token']}"}
    assert_documented(document, "POST", "/token", client.post("/token", auth=("docs-client", secret)))
    wrong = client.post("/token", json={"client_id": "docs-client", "client_secret": "wrong"})
    assert wrong.status_code == 401
    assert_documented(document, "POST", "/token", wrong)
    for _ in range(10):
        r = client.post("/token", json={"client_id": "docs-client", "client_secret": "wrong"})
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert_documented(document, "POST", "/token", r)

    r = client.get("/protected", headers=token)
    assert r.status_code == 200 and r.json["allowed_tasks"] == {"multiply": True}
    assert_documented(document, "GET", "/protected", r)
    r = client.get("/.well-known/jwks.json")
    assert len(r.json["keys"]) == 1
    assert_documented(document, "GET", "/.well-known/jwks.json", r)

    r = client.post("/task", json={"type": "multiply", "args": {"x": 6, "y": 7}}, headers=token)
    assert r.status_code == 201
    assert_documented(document, "POST", "/task", r)
    for path in ("/task/{task_id}", "/task/{task_id}/view"):
        mine = client.get(path.format(task_id=r.json["id"]), headers=token)
        assert mine.status_code == 200
        assert_documented(document, "GET", path, mine)
        theirs = client.get(path.format(task_id=r.json["id"]))  # without the token: another subject's task
        assert theirs.status_code == 404
        assert_documented(document, "GET", path, theirs)
    r = client.post("/task", json={"type": "classified", "args": {"x": 1}}, headers=token)
    assert r.status_code == 403
    assert_documented(document, "POST", "/task", r)


def test_errors_of_the_body_size_and_the_database_are_documented(settings, registry, monkeypatch):
    small = create_app(dataclasses.replace(settings, max_content_length=64), registry).test_client()
    document = get_document(small)
    r = small.post("/task", json={"required_arg": "x" * 100})
    assert r.status_code == 413
    assert_documented(document, "POST", "/task", r)

    monkeypatch.setattr(db, "_resolved_url", None)
    down = create_app(dataclasses.replace(settings, database_url="postgresql://postgres@127.0.0.1:1/x"), registry)
    client = down.test_client()
    for method, path, url in [
        ("POST", "/task", "/task"),
        ("GET", "/task/{task_id}", f"/task/{uuid.uuid4()}"),
        ("POST", "/task/{task_id}/cancel", f"/task/{uuid.uuid4()}/cancel"),
    ]:
        r = client.open(url, method=method, json={"type": "noop"} if method == "POST" else None)
        assert r.status_code == 503
        assert_documented(document, method, path, r)


# -- /docs ---------------------------------------------------------------------------------


class PageParser(HTMLParser):
    """The URLs a page loads, and anything inline a strict Content-Security-Policy would block."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self.spec_url: str | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if any(name == "style" or name.startswith("on") for name in attributes):
            self.inline.append(f"<{tag}> with {sorted(attributes)}")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self._in_script = True
            if attributes.get("src"):
                self.urls.append(attributes["src"])
        if tag == "link" and attributes.get("href"):
            self.urls.append(attributes["href"])
        if tag == "img" and attributes.get("src"):
            self.urls.append(attributes["src"])
        if attributes.get("data-url"):
            self.spec_url = attributes["data-url"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"<script> {data.strip()[:40]}")


CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def test_docs_page_loads_only_its_own_assets(client):
    r = client.get("/docs")
    assert r.status_code == 200
    assert r.mimetype == "text/html"
    assert "script-src 'self'" in r.headers.get("Content-Security-Policy", "")
    page = PageParser()
    page.feed(r.get_data(as_text=True))
    assert page.inline == []
    assert page.spec_url == "/openapi.json"
    assert len(page.urls) >= 4
    names = set()
    for url in page.urls:
        assert url.startswith("/docs/assets/"), url  # from this server, not a CDN
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.mimetype == CONTENT_TYPES[Path(url).suffix], url
        assert len(asset.get_data()) > 100, url
        names.add(Path(url).name)
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "docs-init.js"} <= names
    bundle = client.get("/docs/assets/swagger-ui-bundle.js").get_data()
    assert bundle == (openapi.swagger_ui_dir() / "swagger-ui-bundle.js").read_bytes()
    init = client.get("/docs/assets/docs-init.js").get_data(as_text=True)
    assert "SwaggerUIBundle(" in init and "data-url" in init


def test_docs_assets_are_only_the_known_files(client):
    for name in ("index.html", "oauth2-redirect.html", "..%2Fopenapi.py", "swagger-ui.js.map", "nope.js"):
        r = client.get(f"/docs/assets/{name}")
        assert r.status_code == 404, name
        assert r.is_json and set(r.json) == {"message"}


@pytest.mark.parametrize(
    "body", [b for b in ACCEPTED + REFUSED if isinstance(b, dict)], ids=lambda b: json.dumps(b)[:60]
)
def test_the_server_checks_a_task_request_as_the_document_model_says(body):
    # The document describes TaskRequest; the server checks TaskRequestFields, made from it (faster).
    def checked(validate):
        try:
            return validate(body)
        except ValidationError as err:
            return [(error["type"], error["loc"], error["msg"]) for error in err.errors()]

    as_model = checked(lambda b: TaskRequest.model_validate(b).model_dump(exclude_unset=True))
    assert checked(TypeAdapter(TaskRequestFields).validate_python) == as_model

"""Tokens and protected tasks: POST /token, GET /protected, subjects, the clients CLI, and JWT attacks."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import threading
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flask_tasks import auth, clients, db
from flask_tasks.config import ConfigError
from flask_tasks.web import create_app
from tests.conftest import query, same_as_get
from tests.test_api import assert_error, count_tasks

MULTIPLY = {"type": "multiply", "args": {"x": 6, "y": 7}}


def make_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="session")
def key_a() -> rsa.RSAPrivateKey:
    return make_key()


@pytest.fixture(scope="session")
def key_b() -> rsa.RSAPrivateKey:
    return make_key()


@pytest.fixture
def auth_settings(settings, key_a):
    return dataclasses.replace(settings, jwt_private_pem=private_pem(key_a), jwt_public_pems=None)


@pytest.fixture
def auth_app(auth_settings, registry):
    return create_app(auth_settings, registry)


@pytest.fixture
def api(auth_app):
    client = auth_app.test_client()
    # From another host: from loopback, with no operator configured, a request is an operator's and sees every task.
    client.environ_base["REMOTE_ADDR"] = "192.0.2.10"
    return client


def add_client(app, name: str, tasks: str = "multiply") -> str:
    """`flask clients add NAME --tasks ...` through the CLI; its printed secret."""
    result = app.test_cli_runner().invoke(args=["clients", "add", name, "--tasks", tasks])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(": ", 1) for line in result.output.splitlines() if ": " in line)
    assert lines["client_id"] == name
    return lines["client_secret"]


def get_token(api, client_id: str, secret: str) -> str:
    r = api.post("/token", json={"client_id": client_id, "client_secret": secret})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_for(settings, **changes) -> dict:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "allowed_tasks": {"multiply": True},
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def sign(key, claims: dict, **header) -> str:
    headers = {"kid": auth.key_id(key.public_key()), "typ": auth.TOKEN_TYPE, **header}
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- tokens from client credentials --------------------------------------------------------


def test_a_client_gets_a_token_and_runs_a_protected_task(api, auth_app, conn):
    secret = add_client(auth_app, "alice", "multiply")
    r = api.post("/token", json={"client_id": "alice", "client_secret": secret})
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store"
    assert r.json["token_type"] == "Bearer"
    assert 880 <= r.json["expires_in"] <= 900
    assert r.json["allowed_tasks"] == {"multiply": True}
    token = r.json["access_token"]

    r = api.get("/protected", headers=bearer(token))
    assert r.status_code == 200
    assert r.json["allowed_tasks"] == {"multiply": True}
    assert abs(r.json["exp"] - (time.time() + 900)) < 60

    r = api.post("/task/new", json=MULTIPLY, headers=bearer(token))
    assert r.status_code == 201, r.json
    task_id = r.json["id"]
    assert query(conn, "SELECT subject FROM tasks WHERE id = %s", (task_id,)) == [("alice",)]
    assert api.get(f"/task/{task_id}", headers=bearer(token)).status_code == 200


def test_http_basic_credentials_work_too(api, auth_app):
    secret = add_client(auth_app, "alice")
    r = api.post("/token", auth=("alice", secret))
    assert r.status_code == 200
    assert r.json["allowed_tasks"] == {"multiply": True}


def test_wrong_basic_credentials_are_challenged_with_basic(api, auth_app):
    add_client(auth_app, "alice")
    r = api.post("/token", auth=("alice", "wrong"))
    assert_error(r, 401)
    assert r.headers["WWW-Authenticate"] == 'Basic realm="flask-tasks"'


def test_wrong_credentials_are_401_and_unknown_clients_look_the_same(api, auth_app):
    secret = add_client(auth_app, "alice")
    wrong = api.post("/token", json={"client_id": "alice", "client_secret": secret + "x"})
    unknown = api.post("/token", json={"client_id": "mallory", "client_secret": secret})
    assert_error(wrong, 401)
    assert_error(unknown, 401)
    assert wrong.json == unknown.json
    assert wrong.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"] == 'Basic realm="flask-tasks"'


def test_every_token_request_does_the_same_scrypt_work(api, auth_app, monkeypatch):
    # No timing oracle: a wrong secret, an unknown client and a right secret each cost one scrypt.
    secret = add_client(auth_app, "alice")
    calls = []
    real = clients.secret_matches
    monkeypatch.setattr(clients, "secret_matches", lambda *a: calls.append(1) or real(*a))
    for client_id, client_secret in (("alice", "nope"), ("nobody", "nope"), ("alice", secret)):
        calls.clear()
        api.post("/token", json={"client_id": client_id, "client_secret": client_secret})
        assert len(calls) == 1, client_id


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"client_id": "alice"},
        {"client_id": 1, "client_secret": "x"},
        {"client_id": "alice", "client_secret": "x", "scope": "all"},
        ["alice", "x"],
        {"client_id": "", "client_secret": "x"},
    ],
)
def test_malformed_token_requests_are_400(api, body):
    assert_error(api.post("/token", json=body), 400)


def test_token_request_without_credentials_is_400(api):
    assert_error(api.post("/token"), 400)


def test_repeated_failures_are_slowed_then_forgotten(api, auth_app, conn):
    secret = add_client(auth_app, "alice")
    for _ in range(clients.FREE_FAILURES):
        assert_error(api.post("/token", json={"client_id": "alice", "client_secret": "bad"}), 401)
    # Now even the right secret waits: the answer does not depend on it.
    r = api.post("/token", json={"client_id": "alice", "client_secret": secret})
    assert_error(r, 429)
    assert int(r.headers["Retry-After"]) >= 1
    # Unknown ids are counted the same way, so a 429 does not reveal which ids exist.
    for _ in range(clients.FREE_FAILURES):
        api.post("/token", json={"client_id": "ghost", "client_secret": "bad"})
    assert_error(api.post("/token", json={"client_id": "ghost", "client_secret": "bad"}), 429)

    query(conn, "UPDATE token_failures SET last_failure = now() - interval '1 hour'")
    assert api.post("/token", json={"client_id": "alice", "client_secret": secret}).status_code == 200
    assert query(conn, "SELECT count(*) FROM token_failures WHERE client_id = 'alice'") == [(0,)]


def test_the_wait_grows_and_is_bounded(conn):
    waits = [query(conn, "SELECT flask_tasks_token_wait(%s)", (n,))[0][0] for n in (*range(0, 20), 2000, 2**31 - 1)]
    assert waits[: clients.FREE_FAILURES] == [0.0] * clients.FREE_FAILURES
    assert waits[clients.FREE_FAILURES] == 2.0
    assert waits == sorted(waits)
    assert max(waits) == 300.0  # five minutes, however many failures


def test_parallel_guesses_cannot_share_one_count(database_url):
    # 20 attempts at once for one id: the count is taken before the secret is checked, in one
    # statement, so exactly the 5 free attempts go ahead and the rest must wait.
    barrier, passed = threading.Barrier(20), []

    def attempt() -> None:
        conn = db.connect(database_url, "flask-tasks tests")
        barrier.wait()
        passed.append(bool(db.run(conn, "count_token_attempt", {"client_id": "alice"})))
        conn.close()

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert passed.count(True) == clients.FREE_FAILURES and len(passed) == 20


def test_a_flood_of_failures_is_cut_off_before_any_scrypt_work(api, conn, monkeypatch):
    calls = []
    real = clients.secret_matches
    monkeypatch.setattr(clients, "secret_matches", lambda *a: calls.append(1) or real(*a))
    for n in range(clients.MAX_FAILURES_PER_SECOND):
        query(conn, "INSERT INTO token_failures VALUES (%s, 1, now())", (f"made-up-{n}",))
    r = api.post("/token", json={"client_id": "someone", "client_secret": "x"})
    assert_error(r, 429)
    assert r.headers["Retry-After"] == "1" and calls == []


def test_secrets_are_stored_only_as_salted_scrypt_hashes(auth_app, conn):
    secret = add_client(auth_app, "alice")
    add_client(auth_app, "bob")
    hashes = dict(query(conn, "SELECT name, secret_hash FROM clients"))
    assert secret not in hashes["alice"]
    assert hashes["alice"].startswith("scrypt$32768$8$1$")
    assert hashes["alice"].split("$")[4] != hashes["bob"].split("$")[4]  # salts differ
    assert clients.secret_matches(secret, hashes["alice"])
    assert not clients.secret_matches(secret, hashes["bob"])


def test_no_signing_key_means_no_tokens(client, settings):
    assert_error(client.post("/token", json={"client_id": "a", "client_secret": "b"}), 503)


# -- the clients CLI ---------------------------------------------------------------------


def test_clients_cli_lists_and_removes(auth_app, api):
    secret = add_client(auth_app, "alice", "multiply,classified")
    runner = auth_app.test_cli_runner()
    listed = runner.invoke(args=["clients", "list"])
    assert listed.exit_code == 0 and "alice\tmultiply,classified" in listed.output
    assert runner.invoke(args=["clients", "add", "alice"]).exit_code != 0  # taken
    unknown = runner.invoke(args=["clients", "add", "carol", "--tasks", "nope"])
    assert unknown.exit_code != 0 and "doesnt exist" in unknown.output
    removed = runner.invoke(args=["clients", "remove", "alice"])
    assert removed.exit_code == 0
    assert runner.invoke(args=["clients", "remove", "alice"]).exit_code != 0
    assert_error(api.post("/token", json={"client_id": "alice", "client_secret": secret}), 401)


# -- protected tasks and subjects ----------------------------------------------------------


def test_protected_task_without_a_token_is_401(api, conn):
    r = api.post("/task/new", json=MULTIPLY)
    assert_error(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert count_tasks(conn) == 0


def test_protected_task_not_allowed_by_the_token_is_403(api, auth_app, conn):
    token = get_token(api, "alice", add_client(auth_app, "alice", "multiply"))
    r = api.post("/task/new", json={"type": "classified", "args": {"x": 1}}, headers=bearer(token))
    assert_error(r, 403)
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert count_tasks(conn) == 0


def test_bulk_with_a_protected_task_needs_the_token_for_all(api, auth_app, conn):
    bulk = [{"type": "add", "args": {"x": 1, "y": 2}}, MULTIPLY]
    assert_error(api.post("/task/new", json=bulk), 401)
    assert count_tasks(conn) == 0
    token = get_token(api, "alice", add_client(auth_app, "alice"))
    r = api.post("/task/new", json=bulk, headers=bearer(token))
    assert r.status_code == 201
    assert query(conn, "SELECT DISTINCT subject FROM tasks") == [("alice",)]
    for task in r.json:
        assert api.get(f"/task/{task['id']}", headers=bearer(token)).status_code == 200
        assert_error(api.get(f"/task/{task['id']}"), 404)


def test_a_subjects_tasks_are_hidden_from_others(api, auth_app):
    alice = get_token(api, "alice", add_client(auth_app, "alice"))
    bob = get_token(api, "bob", add_client(auth_app, "bob"))
    task_id = api.post("/task/new", json=MULTIPLY, headers=bearer(alice)).json["id"]
    for headers in ({}, bearer(bob)):
        # 404, as for a task that does not exist: nothing tells that it does.
        assert_error(api.get(f"/task/{task_id}", headers=headers), 404)
        assert_error(api.get(f"/task/{task_id}/view", headers=headers), 404)
        assert_error(api.post(f"/task/{task_id}/cancel", headers=headers), 404)
    assert api.post(f"/task/{task_id}/cancel", headers=bearer(alice)).status_code == 200


def test_tasks_posted_without_a_token_stay_readable_by_id(api, auth_app):
    alice = get_token(api, "alice", add_client(auth_app, "alice"))
    task_id = api.post("/task/new", json={"type": "add", "args": {"x": 1, "y": 2}}).json["id"]
    assert api.get(f"/task/{task_id}").status_code == 200
    assert api.get(f"/task/{task_id}", headers=bearer(alice)).status_code == 200


def test_the_answer_to_a_post_with_a_token_is_the_task_as_get_reads_it(api, auth_app):
    token = get_token(api, "alice", add_client(auth_app, "alice", "multiply"))
    single = api.post("/task", json=MULTIPLY, headers=bearer(token))
    bulk = api.post("/task", json=[MULTIPLY, {"type": "add", "args": {"x": 1, "y": 2}}], headers=bearer(token))
    assert single.status_code == bulk.status_code == 201
    for posted in [single.json, *bulk.json]:
        same_as_get(posted, api.get(f"/task/{posted['id']}", headers=bearer(token)).json)


def test_an_unprotected_task_posted_with_a_token_belongs_to_its_subject(api, auth_app):
    alice = get_token(api, "alice", add_client(auth_app, "alice"))
    task_id = api.post("/task/new", json={"type": "add", "args": {"x": 1, "y": 2}}, headers=bearer(alice)).json["id"]
    assert_error(api.get(f"/task/{task_id}"), 404)
    assert api.get(f"/task/{task_id}", headers=bearer(alice)).status_code == 200


def test_idempotency_keys_are_per_subject(api, auth_app):
    alice = get_token(api, "alice", add_client(auth_app, "alice"))
    body = {"type": "add", "args": {"x": 1, "y": 2}, "idempotency_key": "order-1"}
    mine = api.post("/task/new", json=body, headers=bearer(alice))
    anonymous = api.post("/task/new", json=body)
    assert mine.status_code == anonymous.status_code == 201
    assert mine.json["id"] != anonymous.json["id"]
    again = api.post("/task/new", json=body, headers=bearer(alice))
    assert again.status_code == 200 and again.json["id"] == mine.json["id"]


def test_protected_without_a_token_is_401(api):
    r = api.get("/protected")
    assert_error(r, 401)
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="flask-tasks"'


def test_tasks_lists_which_types_need_authorization(api):
    described = api.get("/tasks").json
    assert described["multiply"]["require_authorization"] is True
    assert described["add"]["require_authorization"] is False


# -- the attack list: every one of these is 401 -------------------------------------------


def forged_hs256(settings, key) -> str:
    """HS256 'signed' with the server's RSA public key as the HMAC secret (the algorithm confusion attack)."""
    header = {"alg": "HS256", "typ": auth.TOKEN_TYPE, "kid": auth.key_id(key.public_key())}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_for(settings)).encode())}"
    mac = hmac.new(public_pem(key).encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def alg_none(settings, key) -> str:
    header = {"alg": "none", "typ": auth.TOKEN_TYPE, "kid": auth.key_id(key.public_key())}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_for(settings)).encode())}."


def tampered(settings, key) -> str:
    header, _, signature = sign(key, claims_for(settings, allowed_tasks={})).split(".")
    return f"{header}.{b64(json.dumps(claims_for(settings)).encode())}.{signature}"


def foreign_key_with_our_kid(settings, key) -> str:
    return sign(make_key(), claims_for(settings), kid=auth.key_id(key.public_key()))


ATTACKS = {
    "alg none": alg_none,
    "HS256 with the public key as secret": forged_hs256,
    "expired": lambda s, k: sign(k, claims_for(s, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
    "nbf in the future": lambda s, k: sign(k, claims_for(s, nbf=int(time.time()) + 3600)),
    "wrong aud": lambda s, k: sign(k, claims_for(s, aud="someone-else")),
    "wrong iss": lambda s, k: sign(k, claims_for(s, iss="https://evil.example")),
    "unknown kid": lambda s, k: sign(k, claims_for(s), kid="no-such-key"),
    "no kid": lambda s, k: jwt.encode(claims_for(s), k, algorithm="RS256", headers={"typ": auth.TOKEN_TYPE}),
    "tampered payload": tampered,
    "signed by an unknown key": lambda s, k: sign(make_key(), claims_for(s)),
    "unknown key with our kid": foreign_key_with_our_kid,
    "no exp": lambda s, k: sign(k, claims_for(s, exp=None)),
    "no sub": lambda s, k: sign(k, claims_for(s, sub=None)),
    "not an access token (typ)": lambda s, k: sign(k, claims_for(s), typ="JWT"),
    "RS512 instead of RS256": lambda s, k: jwt.encode(
        claims_for(s), k, algorithm="RS512", headers={"kid": auth.key_id(k.public_key()), "typ": auth.TOKEN_TYPE}
    ),
    "garbage header": lambda s, k: "e30K!!!." + sign(k, claims_for(s)).split(".", 1)[1],
    "not a JWT": lambda s, k: "hello",
    "empty segments": lambda s, k: "..",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_is_401(api, auth_settings, key_a, conn, attack):
    token = ATTACKS[attack](auth_settings, key_a)
    for method, path, body in (("POST", "/task/new", MULTIPLY), ("GET", "/protected", None)):
        r = api.open(path, method=method, json=body, headers=bearer(token))
        assert_error(r, 401)
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert count_tasks(conn) == 0


def test_the_same_construction_correctly_signed_is_accepted(api, auth_settings, key_a):
    # The control for the attack list: the same construction, correctly signed, is accepted.
    token = sign(key_a, claims_for(auth_settings))
    assert api.post("/task/new", json=MULTIPLY, headers=bearer(token)).status_code == 201
    assert api.get("/protected", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("header", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer ", "Token abc", "Basic \u00e9"])
def test_malformed_authorization_headers_are_401(api, header):
    assert_error(api.post("/task/new", json=MULTIPLY, headers={"Authorization": header}), 401)
    assert_error(api.get("/protected", headers={"Authorization": header}), 401)
    assert_error(api.get(f"/task/{uuid.uuid4()}", headers={"Authorization": header}), 401)


def test_an_undecodable_basic_header_at_token_is_400(api):
    assert_error(api.post("/token", headers={"Authorization": "Basic \u00e9"}), 400)


def test_both_spellings_of_the_access_token_type_are_accepted(api, auth_settings, key_a):
    for typ in ("at+jwt", "application/at+jwt", "AT+JWT"):
        assert api.get("/protected", headers=bearer(sign(key_a, claims_for(auth_settings), typ=typ))).status_code == 200


def test_leeway_accepts_a_token_just_expired(api, auth_settings, key_a):
    now = int(time.time())
    token = sign(key_a, claims_for(auth_settings, iat=now - 100, exp=now - auth_settings.jwt_leeway // 2))
    assert api.get("/protected", headers=bearer(token)).status_code == 200


# -- keys ------------------------------------------------------------------------------


def test_keys_under_2048_bits_are_refused(settings, registry):
    small = make_key(1024)
    for change in ({"jwt_private_pem": private_pem(small)}, {"jwt_public_pems": public_pem(small)}):
        with pytest.raises(ConfigError, match="too weak"):
            create_app(dataclasses.replace(settings, **change), registry)


def test_unreadable_keys_are_refused(settings, registry):
    with pytest.raises(ConfigError, match="JWT_PUBLIC_PEM"):
        create_app(dataclasses.replace(settings, jwt_public_pems="-----BEGIN PUBLIC KEY-----\nnope\n"), registry)
    with pytest.raises(ConfigError, match="JWT_PRIVATE_PEM"):
        create_app(dataclasses.replace(settings, jwt_private_pem="not a key"), registry)


def test_keys_rotate_by_kid(settings, registry, key_a, key_b):
    # The new key signs; the old public key stays listed until its tokens expire.
    rotated = dataclasses.replace(settings, jwt_private_pem=private_pem(key_b), jwt_public_pems=public_pem(key_a))
    api = create_app(rotated, registry).test_client()
    for key in (key_a, key_b):
        assert api.get("/protected", headers=bearer(sign(key, claims_for(rotated)))).status_code == 200
    kids = {k["kid"] for k in api.get("/.well-known/jwks.json").json["keys"]}
    assert kids == {auth.key_id(key_a.public_key()), auth.key_id(key_b.public_key())}
    # Once the old key is dropped, its tokens are refused.
    dropped = dataclasses.replace(rotated, jwt_public_pems=None)
    api = create_app(dropped, registry).test_client()
    assert_error(api.get("/protected", headers=bearer(sign(key_a, claims_for(rotated)))), 401)


def test_a_verify_only_server_accepts_tokens_but_issues_none(settings, registry, key_a):
    verifier = dataclasses.replace(settings, jwt_public_pems=public_pem(key_a))
    api = create_app(verifier, registry).test_client()
    assert api.get("/protected", headers=bearer(sign(key_a, claims_for(verifier)))).status_code == 200
    assert_error(api.post("/token", json={"client_id": "a", "client_secret": "b"}), 503)


def test_keys_from_files(tmp_path, monkeypatch, settings, key_a, key_b):
    from flask_tasks.config import load_settings

    (tmp_path / "a.pem").write_text(public_pem(key_a))
    (tmp_path / "b.pem").write_text(public_pem(key_b))
    monkeypatch.setenv("JWT_PUBLIC_KEY_FILES", f"{tmp_path / 'a.pem'},{tmp_path / 'b.pem'}")
    keys = auth.load_keys(load_settings())
    assert set(keys.verifying) == {auth.key_id(key_a.public_key()), auth.key_id(key_b.public_key())}
    monkeypatch.setenv("JWT_PUBLIC_PEM", public_pem(key_a))
    with pytest.raises(ConfigError, match="not both"):
        load_settings()


def test_indented_pem_blocks_are_each_read(settings, key_a, key_b):
    indented = "\n".join("    " + line for line in (public_pem(key_a) + public_pem(key_b)).splitlines())
    keys = auth.load_keys(dataclasses.replace(settings, jwt_public_pems=indented))
    assert len(keys.verifying) == 2


def test_token_ids_are_rfc7638_thumbprints(key_a):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key_a.public_key()))
    canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"))
    assert auth.key_id(key_a.public_key()) == b64(hashlib.sha256(canonical.encode()).digest())


def test_random_uuid_of_another_subject_is_indistinguishable(api, auth_app):
    alice = get_token(api, "alice", add_client(auth_app, "alice"))
    task_id = api.post("/task/new", json=MULTIPLY, headers=bearer(alice)).json["id"]
    hidden = api.get(f"/task/{task_id}").json["message"]
    missing_id = str(uuid.uuid4())
    missing = api.get(f"/task/{missing_id}").json["message"]
    assert hidden.replace(task_id, "ID") == missing.replace(missing_id, "ID")

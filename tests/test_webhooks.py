"""flask_tasks.webhooks without a database: signatures (checked against the `standardwebhooks` reference package),
the SSRF check (literal IPs and a fake resolver: no real name is ever resolved), and delivery to receivers that
these tests start on 127.0.0.1."""

from __future__ import annotations

import base64
import datetime
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import standardwebhooks

from flask_tasks import outbound, webhooks
from flask_tasks.outbound import DeliveryError, Target, UnsafeUrlError
from flask_tasks.webhooks import WebhookVerificationError

# The example of the Standard Webhooks reference libraries' tests.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TIME, SPEC_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET_TEXT = webhooks.generate_secret()
SECRET = webhooks.parse_secret(SECRET_TEXT)
BODY = b'{"id": "c3e60d14", "status": "done", "result": 3, "text": "\xc3\xa9t\xc3\xa9"}'


# --- signing ---


def test_parse_secret_accepts_whsec_base64_with_or_without_padding():
    assert len(webhooks.parse_secret(SPEC_SECRET)) == 24
    key = bytes(range(25))
    encoded = base64.b64encode(key).decode()
    assert encoded.endswith("=")
    assert webhooks.parse_secret("whsec_" + encoded) == key
    assert webhooks.parse_secret("whsec_" + encoded.rstrip("=")) == key


def test_generate_secret_is_new_and_parses():
    first, second = webhooks.generate_secret(), webhooks.generate_secret()
    assert first != second and first.startswith("whsec_")
    assert 24 <= len(webhooks.parse_secret(first)) <= 32
    standardwebhooks.Webhook(first)  # the reference package reads it too


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "starts with 'whsec_'"),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with 'whsec_'"),
        ("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with 'whsec_'"),
        ("whsec_", "24 to 64 bytes"),
        ("whsec_not base64!", "followed by base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "this one holds 16"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "this one holds 65"),
    ],
)
def test_parse_secret_refuses(text, reason):
    with pytest.raises(ValueError, match=reason):
        webhooks.parse_secret(text)


def test_sign_matches_the_spec_example():
    assert webhooks.sign(webhooks.parse_secret(SPEC_SECRET), SPEC_ID, SPEC_TIME, SPEC_BODY) == SPEC_SIGNATURE


def test_signed_headers():
    headers = webhooks.signed_headers(SECRET, "msg_1", BODY)
    assert headers.keys() == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "user-agent"}
    assert headers["webhook-id"] == "msg_1"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert headers["content-type"] == "application/json" and headers["user-agent"] == "flask-tasks"
    assert webhooks.signed_headers(SECRET, "msg_1", BODY, timestamp=1000)["webhook-timestamp"] == "1000"
    for bad in ("", "two words", "new\nline", "ünicode"):
        with pytest.raises(ValueError):
            webhooks.signed_headers(SECRET, bad, BODY)


def test_our_signature_verifies_with_the_reference_package():
    headers = webhooks.signed_headers(SECRET, "msg_ours", BODY)
    assert standardwebhooks.Webhook(SECRET_TEXT).verify(BODY, headers)["result"] == 3
    webhooks.verify(SECRET, headers, BODY)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(webhooks.generate_secret()).verify(BODY, headers)


def test_reference_package_signature_verifies_with_ours():
    reference = standardwebhooks.Webhook(SECRET_TEXT)
    now = datetime.datetime.now(tz=datetime.UTC)
    headers = {
        "Webhook-Id": "msg_theirs",  # header names are case-insensitive
        "Webhook-Timestamp": str(int(now.timestamp())),
        "Webhook-Signature": reference.sign("msg_theirs", now, BODY.decode()),
    }
    webhooks.verify(SECRET, headers, BODY)


def test_verify_refuses_forged_replayed_and_incomplete():
    headers = webhooks.signed_headers(SECRET, "msg_1", BODY, timestamp=10_000)
    webhooks.verify(SECRET, headers, BODY, now=10_000)
    webhooks.verify(SECRET, headers, BODY, now=10_300)  # the tolerance's edges are in
    webhooks.verify(SECRET, headers, BODY, now=9_700)
    cases = [
        (webhooks.parse_secret(webhooks.generate_secret()), headers, BODY, 10_000, "no matching signature"),
        (SECRET, headers, BODY + b" ", 10_000, "no matching signature"),
        (SECRET, {**headers, "webhook-id": "msg_2"}, BODY, 10_000, "no matching signature"),
        (SECRET, {**headers, "webhook-timestamp": "10001"}, BODY, 10_000, "no matching signature"),
        (SECRET, headers, BODY, 10_301, "too old"),
        (SECRET, headers, BODY, 9_699, "too new"),
        (SECRET, {**headers, "webhook-timestamp": "1e4"}, BODY, 10_000, "not an integer"),
        (SECRET, {**headers, "webhook-signature": "v1,"}, BODY, 10_000, "no matching signature"),
        (SECRET, {**headers, "webhook-signature": "v2," + headers["webhook-signature"][3:]}, BODY, 10_000, "no"),
    ]
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        cases.append((SECRET, {k: v for k, v in headers.items() if k != name}, BODY, 10_000, "missing"))
        cases.append((SECRET, {**headers, name: ""}, BODY, 10_000, "missing"))
    for secret, hdrs, body, now, message in cases:
        with pytest.raises(WebhookVerificationError, match=message):
            webhooks.verify(secret, hdrs, body, now=now)


def test_verify_accepts_any_of_several_signatures():
    headers = webhooks.signed_headers(SECRET, "msg_1", BODY)
    good = headers["webhook-signature"]
    old_key = webhooks.parse_secret(webhooks.generate_secret())
    other = webhooks.sign(old_key, "msg_1", int(headers["webhook-timestamp"]), BODY)
    webhooks.verify(SECRET, {**headers, "webhook-signature": f"v1a,xyz {other} {good}"}, BODY)
    webhooks.verify(old_key, {**headers, "webhook-signature": f"{other} {good}"}, BODY)


# --- SSRF check ---


def no_dns(*args):
    raise AssertionError(f"resolved {args[0]}: a literal address must not be looked up")


def fake_dns(table: dict[str, list[str]]) -> Callable:
    """A getaddrinfo that answers from `table`; any other name fails to resolve."""

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in table[host]
        ]

    return resolve


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://93.184.216.34/", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("gopher://93.184.216.34:70/", "scheme must be http or https"),
        ("93.184.216.34/hook", "scheme must be http or https"),
        ("http://user:pass@93.184.216.34/", "user name or password"),
        ("http://user@93.184.216.34/", "user name or password"),
        ("http://93.184.216.34\\@127.0.0.1/", "user name or password"),
        ("http:///hook", "has no host"),
        ("https://", "has no host"),
        ("http://93.184.216.34/" + "a" * 2048, "longer than 2048"),
        ("http://93.184.216.34/a b", "spaces, control or non-ASCII"),
        ("http://93.184.216.34/a\tb", "spaces, control or non-ASCII"),
        ("http://127.0.0.1\n.example/", "spaces, control or non-ASCII"),
        ("http://bücher.example/", "spaces, control or non-ASCII"),
        ("http://[::1/", "cannot be parsed"),
        ("http://93.184.216.34:99999/", "cannot be parsed"),
        ("http://93.184.216.34:0/", "port must be 1 to 65535"),
        ("http://exa%41mple.com/", "not a valid host name"),
        ("http://[not:an:address]/", "IPv6 address"),
        ("http://2130706433/", "non-standard form"),
        ("http://0x7f000001/", "non-standard form"),
        ("http://017700000001/", "non-standard form"),
        ("http://127.1/", "non-standard form"),
        ("http://0177.0.0.1/", "non-standard form"),
        ("http://0x7f.0.0.1/", "non-standard form"),
        ("http://127.000.000.001/", "non-standard form"),
        ("http://127.0.0.1./", "non-standard form"),
        ("http://10.0.0.256/", "non-standard form"),
        ("http://127.0.0.1/", "the host is 127.0.0.1, a loopback address"),
        ("HTTP://127.0.0.1:5000/", "the host is 127.0.0.1, a loopback address"),
        ("http://10.0.0.1/", "the host is 10.0.0.1, a private address"),
        ("http://172.16.5.4/", "a private address"),
        ("http://192.168.1.1/", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "the cloud metadata address"),
        ("http://169.254.1.1/", "a link-local address"),
        ("http://100.64.0.1/", "a shared (CGNAT) address"),
        ("http://0.0.0.0/", "an unspecified address"),
        ("http://0.1.2.3/", "a 'this network' address"),
        ("http://192.0.0.8/", "an IETF protocol address"),
        ("http://198.18.0.1/", "a benchmarking address"),
        ("http://192.0.2.1/", "a documentation address"),
        ("http://198.51.100.7/", "a documentation address"),
        ("http://203.0.113.9/", "a documentation address"),
        ("http://224.0.0.1/", "a multicast address"),
        ("http://240.0.0.1/", "a reserved address"),
        ("http://255.255.255.255/", "the broadcast address"),
        ("http://[::1]:8080/", "the host is ::1, a loopback address"),
        ("http://[::]/", "an unspecified address"),
        ("http://[fc00::1]/", "a private address"),
        ("http://[fd12:3456::1]/", "a private address"),
        ("http://[fe80::1]/", "a link-local address"),
        ("http://[fe80::1%25eth0]/", "a link-local address"),
        ("http://[fec0::1]/", "a site-local address"),
        ("http://[ff02::1]/", "a multicast address"),
        ("http://[fd00:ec2::254]/", "the cloud metadata address"),
        ("http://[::ffff:127.0.0.1]/", "an IPv4-mapped IPv6 address"),
        ("http://[::ffff:93.184.216.34]/", "an IPv4-mapped IPv6 address"),  # all of them, even a public one
        ("http://[::127.0.0.1]/", "an IPv4-compatible IPv6 address"),
        ("http://[64:ff9b::7f00:1]/", "a NAT64 address"),
        ("http://[64:ff9b:1::a00:1]/", "a NAT64 address"),
        ("http://[2002:7f00:1::1]/", "a 6to4 address"),
        ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "a Teredo address"),
        ("http://[2001:db8::1]/", "a documentation address"),
        ("http://[3fff::1]/", "a documentation address"),
        ("http://[100::1]/", "a special-purpose address"),  # discard-only: caught by is_global, not by the table
    ],
)
def test_check_url_refuses(url, reason):
    with pytest.raises(UnsafeUrlError, match=reason.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        outbound.check_url(url, resolve=no_dns)


DNS = fake_dns(
    {
        "metadata.example": ["169.254.169.254"],
        "localhost": ["127.0.0.1", "::1"],
        "rebind.example": ["93.184.216.34", "10.0.0.1"],
        "private6.example": ["2606:2800:220:1:248:1893:25c8:1946", "fd00::1"],
        "mapped.example": ["::ffff:10.0.0.1"],
        "zoned.example": ["fe80::1%eth0"],
        "empty.example": [],
        "hooks.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"],
    }
)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://metadata.example/latest", "the host resolves to 169.254.169.254, the cloud metadata address"),
        ("http://localhost:5000/", "the host resolves to 127.0.0.1, a loopback address"),
        ("http://rebind.example/", "the host resolves to 10.0.0.1, a private address"),
        ("https://private6.example/", "the host resolves to fd00::1, a private address"),
        ("http://mapped.example/", "the host resolves to ::ffff:a00:1, an IPv4-mapped IPv6 address"),
        ("http://zoned.example/", "the host resolves to fe80::1, a link-local address"),
        ("http://nowhere.example/", "cannot resolve host nowhere.example"),
        ("http://empty.example/", "cannot resolve host empty.example"),
    ],
)
def test_check_url_refuses_names_resolving_to_unsafe_addresses(url, reason):
    with pytest.raises(UnsafeUrlError) as caught:
        outbound.check_url(url, resolve=DNS)
    assert str(caught.value) == reason


def test_check_url_accepts_public_addresses():
    assert outbound.check_url("http://93.184.216.34/x", resolve=no_dns) == Target(
        "http", "93.184.216.34", 80, "/x", ("93.184.216.34",)
    )
    assert outbound.check_url("http://93.184.216.34", resolve=no_dns).path_and_query == "/"
    v6 = outbound.check_url("https://[2606:2800:220:1:248:1893:25c8:1946]/hook?a=1&b=2#part", resolve=no_dns)
    assert v6 == Target(
        "https", "2606:2800:220:1:248:1893:25c8:1946", 443, "/hook?a=1&b=2", ("2606:2800:220:1:248:1893:25c8:1946",)
    )
    asked = []
    named = outbound.check_url("https://Hooks.Example:8443/a/b?c", resolve=lambda *a: asked.append(a) or DNS(*a))
    assert named == Target(
        "https", "hooks.example", 8443, "/a/b?c", ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    )
    assert asked == [("hooks.example", 8443, 0, socket.SOCK_STREAM)]


def test_allow_private_lets_local_addresses_through_but_not_the_rest():
    for url, address in [
        ("http://127.0.0.1:5000/", "127.0.0.1"),
        ("http://10.0.0.1/", "10.0.0.1"),
        ("http://[::1]:8080/", "::1"),
    ]:
        assert outbound.check_url(url, allow_private=True, resolve=no_dns).addresses == (address,)
    assert outbound.check_url("http://localhost/", allow_private=True, resolve=DNS).addresses == ("127.0.0.1", "::1")
    for url, reason in [
        ("ftp://127.0.0.1/", "scheme"),
        ("http://u:p@127.0.0.1/", "user name"),
        ("http://2130706433/", "non-standard form"),
        ("http://127.1/", "non-standard form"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://255.255.255.255/", "broadcast"),
        ("http://169.254.169.254/", "metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "IPv4-mapped"),  # would reach the IPv4 metadata address
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
        ("http://[64:ff9b::a9fe:a9fe]/", "NAT64"),
    ]:
        with pytest.raises(UnsafeUrlError, match=reason):
            outbound.check_url(url, allow_private=True, resolve=no_dns)


# --- delivery, to receivers on 127.0.0.1 ---


def read_request(conn: socket.socket) -> dict:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the request ended")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the body ended")
        body += chunk
    return {"line": line, "headers": headers, "body": body}


def answer(status: str, body: bytes = b"", extra: str = "") -> Callable:
    def respond(conn, seen, stop):
        seen.append(read_request(conn))
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode())
        conn.sendall(body)

    return respond


@contextmanager
def receiver(respond: Callable, tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list]]:
    """A server on 127.0.0.1 that runs `respond(conn, seen, stop)` for each connection, one at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop, seen = threading.Event(), []

    def run():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                conn.settimeout(5)
                if tls:
                    conn = tls.wrap_socket(conn, server_side=True)
                respond(conn, seen, stop)
            except OSError:  # the client hung up (as it should after max_answer_bytes or its timeout)
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def local_target(port: int, path: str = "/hook?task=1") -> Target:
    return outbound.check_url(f"http://127.0.0.1:{port}{path}", allow_private=True, resolve=no_dns)


def test_post_delivers_a_signed_body():
    with receiver(answer("200 OK", b'{"ok": true}')) as (port, seen):
        # The host name goes in the Host header; the connection goes to the address the check resolved.
        target = outbound.check_url(
            f"http://receiver.test:{port}/hook?task=1",
            allow_private=True,
            resolve=fake_dns({"receiver.test": ["127.0.0.1"]}),
        )
        headers = webhooks.signed_headers(SECRET, "msg_task_1", BODY)
        assert outbound.post(target, headers, BODY, timeout=2) == outbound.Answer(200, '{"ok": true}')
    [request] = seen
    assert request["line"] == "POST /hook?task=1 HTTP/1.1"
    assert request["headers"]["host"] == f"receiver.test:{port}"
    assert request["headers"]["user-agent"] == "flask-tasks"
    assert request["body"] == BODY
    assert standardwebhooks.Webhook(SECRET_TEXT).verify(request["body"], request["headers"])["status"] == "done"
    webhooks.verify(SECRET, request["headers"], request["body"])


def test_post_returns_error_statuses_and_does_not_follow_redirects():
    with receiver(answer("500 Internal Server Error", b"broken")) as (port, _):
        assert outbound.post(local_target(port), {}, BODY, timeout=2) == outbound.Answer(500, "broken")
    with receiver(answer("302 Found", extra="Location: http://127.0.0.1:1/elsewhere\r\n")) as (port, seen):
        assert outbound.post(local_target(port), {}, BODY, timeout=2).status == 302
        time.sleep(0.1)
    assert len(seen) == 1


def test_post_reads_at_most_max_answer_bytes():
    def huge(conn, seen, stop):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
        while not stop.is_set():
            conn.sendall(b"\xc3\xa9" * 65536)

    with receiver(huge) as (port, _):
        started = time.monotonic()
        answered = outbound.post(local_target(port), {}, BODY, timeout=2, max_answer_bytes=101)
    assert answered.status == 200
    assert answered.text == "é" * 50 + "\ufffd"  # cut mid-character: decoded leniently
    assert time.monotonic() - started < 1


def test_post_times_out_on_a_receiver_that_never_answers():
    def black_hole(conn, seen, stop):
        read_request(conn)
        stop.wait(5)

    with receiver(black_hole) as (port, _):
        started = time.monotonic()
        with pytest.raises(DeliveryError, match=r"^timed out after 0\.5 s$"):
            outbound.post(local_target(port), {}, BODY, timeout=0.5)
        assert 0.45 < time.monotonic() - started < 1.2


def test_post_deadline_holds_against_a_trickling_receiver():
    def trickle(conn, seen, stop):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not stop.wait(0.05):
            conn.sendall(b"X")  # a header line that never ends, one byte at a time

    with receiver(trickle) as (port, _):
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="timed out"):
            outbound.post(local_target(port), {}, BODY, timeout=0.5)
        assert time.monotonic() - started < 1.2


def test_post_connection_failures():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        free_port = probe.getsockname()[1]
    with pytest.raises(DeliveryError, match="^connection refused$"):
        outbound.post(local_target(free_port), {}, BODY, timeout=1)

    def hang_up(conn, seen, stop):
        read_request(conn)

    with receiver(hang_up) as (port, _), pytest.raises(DeliveryError, match="closed without an answer"):
        outbound.post(local_target(port), {}, BODY, timeout=1)

    def smtp_banner(conn, seen, stop):
        read_request(conn)  # first: a banner sent before the request is read races the sending (Broken pipe)
        conn.sendall(b"220 SMTP ready\r\n")

    smtp = receiver(smtp_banner)
    with smtp as (port, _), pytest.raises(DeliveryError, match="malformed answer"):
        outbound.post(local_target(port), {}, BODY, timeout=1)


def test_post_tries_the_next_address_when_one_refuses():
    with receiver(answer("204 No Content")) as (port, seen):
        target = Target("http", "receiver.test", port, "/", ("127.0.0.2", "127.0.0.1"))  # nothing on 127.0.0.2
        assert outbound.post(target, {}, BODY, timeout=2).status == 204
    assert len(seen) == 1


# --- TLS: the certificate is checked against the host name, not the address dialled ---


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver.test")])
    now = datetime.datetime.now(tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("receiver.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server_names: list[str | None] = []
    server.sni_callback = lambda sslobj, server_name, context: server_names.append(server_name)
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client, server_names


def test_post_over_tls_checks_the_certificate_against_the_host_name(tls):
    server, client, server_names = tls
    with receiver(answer("200 OK", b"secure"), tls=server) as (port, seen):
        target = Target("https", "receiver.test", port, "/hook", ("127.0.0.1",))
        assert outbound.post(target, {}, BODY, timeout=2, context=client) == outbound.Answer(200, "secure")
        assert server_names[-1] == "receiver.test"
        assert seen[-1]["headers"]["host"] == f"receiver.test:{port}"

        with pytest.raises(DeliveryError, match="TLS certificate check failed"):  # the default context: untrusted
            outbound.post(target, {}, BODY, timeout=2)
        other = Target("https", "other.test", port, "/hook", ("127.0.0.1",))
        with pytest.raises(DeliveryError, match="TLS certificate check failed: Hostname mismatch"):
            outbound.post(other, {}, BODY, timeout=2, context=client)
    assert len(seen) == 1


@pytest.mark.parametrize("stamp", ["9" * 400, "1" * 5000, "12345678901234"])
def test_an_absurd_timestamp_is_refused_not_an_error(stamp):
    secret = webhooks.parse_secret(webhooks.generate_secret())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": stamp, "webhook-signature": "v1,AAAA"}
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        webhooks.verify(secret, headers, b"{}")

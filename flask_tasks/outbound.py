"""Outbound HTTP to URLs that clients give (notify_url): the SSRF check, and a POST to the address checked.

No Flask and no database here: the web calls `check_url` while it answers a request, and a handler calls
`check_url` again and then `post` when a task with a notify_url ends (no second DNS lookup: rebinding).
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit


class UnsafeUrlError(ValueError):
    """A URL we refuse to send to; the message says why, for the client."""


class DeliveryError(Exception):
    """The POST got no HTTP answer (refused, reset, timed out, TLS failure...)."""


# --- SSRF guard (OWASP SSRF prevention cheat sheet) ---


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (addresses, already resolved and checked) and what to ask for."""

    scheme: str
    host: str  # as written (lower-cased, no brackets): the Host header and the TLS server name
    port: int
    path_and_query: str
    addresses: tuple[str, ...]


_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
_IPV4_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def _ranges(*table: tuple[str, str]) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    return [(ipaddress.ip_network(net), reason) for reason, nets in table for net in nets.split()]


# (reason, ranges), checked in order so the first match names the range. Multicast, broadcast and unspecified
# addresses are never a receiver, and link-local ones (the cloud metadata address among them) are where the
# secrets of a host live: all of these are refused even when private addresses are allowed.
_ALWAYS_REFUSED = _ranges(
    ("an unspecified address", "0.0.0.0/32 ::/128"),
    ("the broadcast address", "255.255.255.255/32"),
    ("a multicast address", "224.0.0.0/4 ff00::/8"),
    ("the cloud metadata address", "169.254.169.254/32 fd00:ec2::254/128"),
    ("a link-local address", "169.254.0.0/16 fe80::/10"),
    # IPv6 forms that carry an IPv4 address could lead to any IPv4 host, the metadata one too: none is allowed.
    ("an IPv4-mapped IPv6 address", "::ffff:0:0/96"),
    ("an IPv4-compatible IPv6 address", "::/96"),
    ("a NAT64 address", "64:ff9b::/96 64:ff9b:1::/48"),
    ("a 6to4 address", "2002::/16"),
    ("a Teredo address", "2001::/32"),
)
_NON_PUBLIC = _ranges(
    ("a loopback address", "127.0.0.0/8 ::1/128"),
    ("a private address", "10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7"),
    ("a site-local address", "fec0::/10"),
    ("a shared (CGNAT) address", "100.64.0.0/10"),
    ("a 'this network' address", "0.0.0.0/8"),
    ("an IETF protocol address", "192.0.0.0/24"),
    ("a benchmarking address", "198.18.0.0/15"),
    ("a reserved address", "240.0.0.0/4"),
    ("a documentation address", "192.0.2.0/24 198.51.100.0/24 203.0.113.0/24 2001:db8::/32 3fff::/20"),
)


def _address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    if ip.is_loopback:  # ::1 lies in ::/96, the IPv4-compatible range, but it is just the loopback
        return None if allow_private else "a loopback address"
    for net, name in _ALWAYS_REFUSED if allow_private else _ALWAYS_REFUSED + _NON_PUBLIC:
        if ip.version == net.version and ip in net:
            return name
    if not allow_private and (ip.is_reserved or not ip.is_global):  # whatever else IANA marks special-purpose
        return "a special-purpose address"
    return None


def check_url(url: str, allow_private: bool = False, resolve: Callable = socket.getaddrinfo) -> Target:
    """Check that `url` is an http(s) URL whose host (every address of it) is public; UnsafeUrlError otherwise."""
    if len(url) > 2048:
        raise UnsafeUrlError("the URL is longer than 2048 characters")
    if not url.isascii() or not url.isprintable() or " " in url:
        # urlsplit silently drops tabs and newlines: refuse them rather than send somewhere unexpected.
        raise UnsafeUrlError("the URL holds spaces, control or non-ASCII characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrlError(f"the URL cannot be parsed ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrlError("the URL's scheme must be http or https")
    if "@" in parts.netloc:
        raise UnsafeUrlError("the URL must not hold a user name or password")
    host = parts.hostname or ""
    if not host:
        raise UnsafeUrlError("the URL has no host")
    if port == 0:
        raise UnsafeUrlError("the URL's port must be 1 to 65535")
    port = port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    if parts.netloc.startswith("["):  # an IPv6 literal
        try:
            literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.IPv6Address(host)
        except ValueError:
            raise UnsafeUrlError(f"the host [{host}] is not a valid IPv6 address") from None
    elif not _HOST_NAME.fullmatch(host):
        raise UnsafeUrlError(f"the host {host!r} is not a valid host name")
    else:
        # As browsers do (WHATWG URL), a host whose last label is a number is an IPv4 address. Only the dotted
        # quad is accepted: 2130706433, 0x7f000001, 0177.0.0.1 and 127.1 all mean 127.0.0.1 to some resolvers.
        last = host.rstrip(".").rsplit(".", 1)[-1]
        if _IPV4_LABEL.fullmatch(last):
            try:
                literal = ipaddress.IPv4Address(host)
            except ValueError:
                raise UnsafeUrlError(
                    f"the host {host} is an IPv4 address in a non-standard form; write it as a.b.c.d"
                ) from None
        else:
            literal = None

    if literal is not None:
        addresses = [literal]
        verb = "is"
    else:
        try:
            found = resolve(host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise UnsafeUrlError(f"cannot resolve host {host}") from None
        # An IPv6 link-local answer may carry a zone ("fe80::1%eth0"); the address is what is checked.
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in found))
        if not addresses:
            raise UnsafeUrlError(f"cannot resolve host {host}")
        verb = "resolves to"
    # Every address is checked, not just the first: a name that answers a public and a private address
    # (or is rebound between lookups) must not get through. post() connects only to these addresses.
    for ip in addresses:
        problem = _address_problem(ip, allow_private)
        if problem:
            raise UnsafeUrlError(f"the host {verb} {ip}, {problem}")
    return Target(parts.scheme, host, port, path, tuple(str(ip) for ip in addresses))


# --- Delivery ---


@dataclass(frozen=True)
class Answer:
    status: int
    text: str  # the start of the answer's body, for the task's record


class _DeadlineSocket(io.RawIOBase):
    """A socket whose every send and receive waits at most until one deadline, so a receiver that trickles
    bytes cannot stretch the attempt (a plain socket timeout restarts with each byte)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self.sock, self.deadline = sock, deadline

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(remaining)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._arm()
            view = view[self.sock.send(view) :]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self._arm()
        return self.sock.recv_into(buffer)

    def makefile(self, mode: str) -> io.BufferedReader:  # http.client reads its answer through this
        return io.BufferedReader(self)

    def close(self) -> None:
        # http.client closes its socket on seeing "Connection: close", before it reads the body; post() closes it.
        pass


class _Connection(http.client.HTTPConnection):
    """Connects to the checked addresses, never to what the host name resolves to now (DNS rebinding)."""

    def __init__(self, target: Target, deadline: float, context: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port)
        self.target, self.deadline, self.context = target, deadline, context
        self.raw: socket.socket | None = None

    def connect(self) -> None:
        error: OSError = ConnectionError("no address")
        for address in self.target.addresses:
            sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
                sock.connect((address, self.target.port))
                break
            except OSError as exc:  # refused or unreachable: the next address may answer
                sock.close()
                error = exc
        else:
            raise error
        if self.target.scheme == "https":
            # The certificate is checked against the host name written in the URL, not the IP we dialled.
            context = self.context or ssl.create_default_context()
            sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
            try:
                sock = context.wrap_socket(sock, server_hostname=self.target.host)
            except BaseException:
                sock.close()
                raise
        self.raw = sock
        self.sock = _DeadlineSocket(sock, self.deadline)  # type: ignore[assignment]


def post(
    target: Target,
    headers: dict[str, str],
    body: bytes,
    timeout: float,
    max_answer_bytes: int = 4096,
    context: ssl.SSLContext | None = None,
) -> Answer:
    """POST body to a checked target within `timeout` seconds in all; redirects are not followed.

    `context` replaces the default TLS context (tests trust their own certificate with it)."""
    return send("POST", target, headers, body, timeout, max_answer_bytes, context)


def send(
    method: str,
    target: Target,
    headers: dict[str, str],
    body: bytes | None,
    timeout: float,
    max_answer_bytes: int = 4096,
    context: ssl.SSLContext | None = None,
) -> Answer:
    """One request to a checked target within `timeout` seconds in all; redirects are not followed."""
    deadline = time.monotonic() + timeout
    host = f"[{target.host}]" if ":" in target.host else target.host
    if target.port != (443 if target.scheme == "https" else 80):
        host = f"{host}:{target.port}"
    connection = _Connection(target, deadline, context)
    try:
        connection.request(method, target.path_and_query, body, {**headers, "Host": host, "Connection": "close"})
        response = connection.getresponse()
        text = response.read(max_answer_bytes).decode("utf-8", errors="replace")
        return Answer(response.status, text)
    except TimeoutError:
        raise DeliveryError(f"timed out after {timeout} s") from None
    except ConnectionRefusedError:
        raise DeliveryError("connection refused") from None
    except http.client.RemoteDisconnected:  # before ConnectionResetError, its base class
        raise DeliveryError("connection closed without an answer") from None
    except ConnectionResetError:
        raise DeliveryError("connection reset") from None
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"TLS certificate check failed: {exc.verify_message}") from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS error: {exc.reason or exc}") from None
    except http.client.HTTPException as exc:
        raise DeliveryError(f"malformed answer: {type(exc).__name__}") from None
    except OSError as exc:
        raise DeliveryError(exc.strerror or str(exc) or type(exc).__name__) from None
    finally:
        connection.close()
        if connection.raw:
            connection.raw.close()

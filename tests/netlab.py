"""Test hosts on one machine: network namespaces with veth links to the host, and a delaying TCP proxy.

Used by tests/test_hosts.py and bench/hosts.py. Creating namespaces needs root and `ip` (iproute2):
`available()` says why it cannot be done here, for a test to skip with that reason.

A Lab(prefix="ftt", subnet="10.201", hosts=3) is, hosts numbered from 1:

    namespace ftt-h1: link fttn1 10.201.1.2/24 (and lo)  <-- veth -->  the host: link ftth1 10.201.1.1/24
    namespace ftt-h2: link fttn2 10.201.2.2/24 (and lo)  <-- veth -->  the host: link ftth2 10.201.2.1/24
    ...

A process in namespace i reaches the host at lab.host_address(i) only; the host reaches it at
lab.ns_address(i). PostgreSQL stays on loopback (or its Unix socket): the processes in the namespaces
reach it through a Proxy listening on the host addresses of the links. This kernel has no netem, so
the proxy is where delay, stalls and dropped connections come from. It runs as a process of its own:

    python -m tests.netlab proxy --listen 10.201.1.1:0,10.201.2.1:0 --target unix:/tmp/pg/.s.PGSQL.5432 \\
        --delay-ms 2 --control 127.0.0.1:0

It delays every chunk of bytes by half the delay in each direction (so a round trip takes `delay` ms
longer), each chunk due at its arrival plus that, in order, without limiting throughput; it prints
{"port": ..., "control": ...} once it listens, and takes one-line commands on its control port:
`delay MS`, `stall SECONDS`, `drop FRACTION`, `refuse SECONDS`, `stats` (see Proxy).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent


class LabError(RuntimeError):
    """An `ip` command failed."""


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit code {done.returncode}'}")
    return done.stdout


@functools.cache
def available(prefix: str = "ftt") -> str | None:
    """None if network namespaces and veth links can be made here, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to make network namespaces"
    namespace, link = f"{prefix}-probe", f"{prefix}probe"
    try:
        _ip("netns", "del", namespace, check=False)
        _ip("netns", "add", namespace)
        _ip("link", "add", link, "type", "veth", "peer", "name", f"{link}2", "netns", namespace)
    except (LabError, OSError, subprocess.SubprocessError) as err:
        return f"cannot make a network namespace with a veth link here: {err}"
    finally:
        _ip("link", "del", link, check=False)
        _ip("netns", "del", namespace, check=False)
    return None


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _links() -> list[str]:
    # `ip -o link` lines read "12: ftth1@if11: <BROADCAST,...> ..."
    return [line.split(": ", 2)[1].split("@")[0] for line in _ip("-o", "link", "show").splitlines() if ": " in line]


def _pids_in(namespace: str) -> list[int]:
    return [int(pid) for pid in _ip("netns", "pids", namespace, check=False).split()]


class Lab:
    """`hosts` network namespaces, each with a veth link to the host; removed on exit, even after a failure.

    Names and addresses come from `prefix` and `subnet` (a /16 given as its first two numbers), so
    the tests (ftt, 10.201) and the bench (ftb, 10.202) each have their own. One Lab per prefix at a
    time: entering it first removes whatever an earlier run with the same prefix left behind.
    """

    def __init__(self, prefix: str = "ftt", subnet: str = "10.201", hosts: int = 3) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", prefix):
            raise ValueError(f"prefix {prefix!r}: lowercase letters and digits, at most 10 (link names <= 15)")
        if not re.fullmatch(r"\d{1,3}\.\d{1,3}", subnet) or not 1 <= hosts <= 254:
            raise ValueError(f"subnet {subnet!r} (like '10.201') or hosts {hosts} (1 to 254)")
        self.prefix, self.subnet = prefix, subnet
        self.hosts = list(range(1, hosts + 1))

    def namespace(self, i: int) -> str:
        return f"{self.prefix}-h{i}"

    def host_link(self, i: int) -> str:
        """The host's end of host i's link: `ip link set ... down` cuts it off."""
        return f"{self.prefix}h{i}"

    def host_address(self, i: int) -> str:
        """The host's address on host i's link: all host i can reach."""
        return f"{self.subnet}.{i}.1"

    def ns_address(self, i: int) -> str:
        """Host i's address, as the host reaches it."""
        return f"{self.subnet}.{i}.2"

    def __enter__(self) -> Lab:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        self.close()  # what a run killed before its cleanup left behind
        try:
            for i in self.hosts:
                namespace, outer, inner = self.namespace(i), self.host_link(i), f"{self.prefix}n{i}"
                _ip("netns", "add", namespace)
                _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", namespace)
                _ip("addr", "add", f"{self.host_address(i)}/24", "dev", outer)
                _ip("link", "set", outer, "up")
                _ip("-n", namespace, "addr", "add", f"{self.ns_address(i)}/24", "dev", inner)
                _ip("-n", namespace, "link", "set", inner, "up")
                _ip("-n", namespace, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop what still runs in the namespaces of this prefix, then remove them and their links."""
        namespaces = [name for name in _namespaces() if name.startswith(f"{self.prefix}-")]
        self._stop_processes(namespaces)
        for link in _links():
            if re.fullmatch(rf"{self.prefix}h\d+", link):
                _ip("link", "del", link, check=False)  # takes its peer in the namespace with it
        for name in namespaces:
            _ip("netns", "del", name, check=False)

    @staticmethod
    def _stop_processes(namespaces: list[str]) -> None:
        # A namespace outlives `ip netns del` while a process runs in it. These processes were
        # started in our namespaces (normally the test has stopped them already): SIGTERM, then SIGKILL.
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            pids = [pid for name in namespaces for pid in _pids_in(name)]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(_pids_in(name) for name in namespaces):
                time.sleep(0.05)

    def cut(self, i: int) -> None:
        """Cut host i off: its link goes down (packets are lost, connections hang; nothing is closed)."""
        _ip("link", "set", self.host_link(i), "down")

    def restore(self, i: int) -> None:
        _ip("link", "set", self.host_link(i), "up")

    def command(self, i: int, *argv: str) -> list[str]:
        """argv run inside host i (`ip netns exec` execs it: its pid is the process's own)."""
        return ["ip", "netns", "exec", self.namespace(i), *argv]

    def popen(self, i: int, argv: Sequence[str], env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen:
        """Start argv inside host i; kwargs go to subprocess.Popen."""
        return subprocess.Popen(self.command(i, *argv), env=env, **kwargs)

    def run(self, i: int, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(i, *argv), **kwargs)


# -- PostgreSQL URLs --------------------------------------------------------------------------


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "localhost"
    return host, int(query.get("port") or parts.port or 5432)


def pg_target(database_url: str) -> str:
    """Where the proxy connects for this PostgreSQL URL: `HOST:PORT`, or `unix:PATH` for a socket directory."""
    host, port = _host_port(database_url)
    return f"unix:{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


def url_via(database_url: str, host: str, port: int) -> str:
    """The same URL (user, password, database, options) reaching PostgreSQL at host:port instead."""
    parts = urlsplit(database_url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key not in ("host", "hostaddr", "port")]
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@{host}:{port}" if user else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


# -- the proxy, as the tests and the bench drive it ---------------------------------------------


class Proxy:
    """The delaying proxy (a process of its own, `python -m tests.netlab proxy`) and its control.

        with Proxy([lab.host_address(i) for i in lab.hosts], pg_target(url), delay_ms=2) as proxy:
            env["DATABASE_URL"] = proxy.url(url, lab.host_address(1))   # for a process in host 1

    Every address listens on the same port, `proxy.port`.
    """

    def __init__(
        self,
        listen: Sequence[str],
        target: str,
        delay_ms: float = 0.0,
        port: int = 0,
        log: Path | str | None = None,
    ) -> None:
        self.listen, self.target, self.delay_ms, self.log = list(listen), target, delay_ms, log
        self.port, self.control_port = port, 0
        self.process: subprocess.Popen | None = None

    def start(self) -> Proxy:
        listen = ",".join(f"{host}:{self.port}" for host in self.listen)
        argv = [sys.executable, "-m", "tests.netlab", "proxy", "--listen", listen, "--target", self.target]
        argv += ["--delay-ms", str(self.delay_ms), "--control", "127.0.0.1:0"]
        stderr = open(self.log, "a") if self.log else None  # noqa: SIM115 - the child keeps it
        try:
            self.process = subprocess.Popen(argv, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=stderr)
        finally:
            if stderr is not None:
                stderr.close()
        assert self.process.stdout is not None
        if not select.select([self.process.stdout], [], [], 15)[0]:
            self.stop()
            raise RuntimeError("the proxy did not start within 15 s")
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"the proxy exited with code {code} before listening (see its stderr)")
        ready = json.loads(line)
        self.port, self.control_port = ready["port"], ready["control"]
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, database_url: str, host: str) -> str:
        """database_url as a process reaching the proxy at `host` (a listen address) uses it."""
        return url_via(database_url, host, self.port)

    def send(self, command: str) -> dict[str, Any]:
        """One control command; its JSON answer."""
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=10) as sock:
            sock.sendall(command.encode() + b"\n")
            answer = sock.makefile().readline()
        reply = json.loads(answer)
        if "error" in reply:
            raise ValueError(f"proxy: {command!r}: {reply['error']}")
        return reply

    def set_delay(self, ms: float) -> None:
        """Round trips take `ms` longer from now on (data already in flight keeps its delay)."""
        self.send(f"delay {ms}")

    def stall(self, seconds: float) -> None:
        """Hold every byte of every connection for `seconds` (connections stay open)."""
        self.send(f"stall {seconds}")

    def drop(self, fraction: float = 1.0) -> int:
        """Reset this fraction of the open connections, chosen at random (both ends); how many."""
        return int(self.send(f"drop {fraction}")["dropped"])

    def refuse(self, seconds: float) -> None:
        """Reset every new connection for `seconds`."""
        self.send(f"refuse {seconds}")

    def stats(self) -> dict[str, Any]:
        """Connections accepted, refused, dropped and open; bytes each way; the delay."""
        return self.send("stats")


# -- the proxy process ------------------------------------------------------------------------

CHUNK = 256 * 1024  # bytes read at a time
BUFFER = 4 * 1024 * 1024  # bytes held per direction before reading pauses (more than delay x any rate here)
LATE_STEP = 0.00002  # seconds: how fast the estimate of the timer's lateness follows it


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection abruptly: a TCP reset, as a crashed host or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Direction:
    """Bytes one way: each chunk read is due `delay` later, and never before the chunk ahead of it."""

    def __init__(
        self, proxy: _ProxyServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        self.proxy, self.reader, self.writer, self.upstream = proxy, reader, writer, upstream
        self.chunks: collections.deque[tuple[float, bytes]] = collections.deque()  # (due, data); b"" is the end
        self.queued = 0
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    async def receive(self) -> None:
        loop, due = asyncio.get_running_loop(), 0.0
        while True:
            data = await self.reader.read(CHUNK)
            due = max(due, loop.time() + self.proxy.delay)
            self.chunks.append((due, data))
            self.arrived.set()
            if not data:
                return
            self.queued += len(data)
            if self.queued > BUFFER:
                self.room.clear()
                await self.room.wait()

    async def send(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.chunks:
                self.arrived.clear()
                await self.arrived.wait()
            wait = max(self.chunks[0][0], self.proxy.stalled_until) - loop.time()
            if wait > self.proxy.late:
                # The event loop wakes late: its timer rounds up to a millisecond, and a busy
                # machine adds its own wait for a core. Sleep that much less, so that the delay
                # added is the one asked for (the median of it) rather than a millisecond or more
                # above: `late` follows the median lateness, a step up or down at each wake.
                wake = loop.time() + wait - self.proxy.late
                await asyncio.sleep(wait - self.proxy.late)
                step = LATE_STEP if loop.time() - wake > self.proxy.late else -LATE_STEP
                self.proxy.late = min(max(0.0, self.proxy.late + step), self.proxy.delay)
                continue  # a stall may have been set meanwhile
            out, now, end = [], loop.time(), False
            while self.chunks and self.chunks[0][0] <= now and not end:
                data = self.chunks.popleft()[1]
                out.append(data)
                end = not data
            sent = b"".join(out)
            self.writer.write(sent)
            self.proxy.bytes[self.upstream] += len(sent)
            self.queued -= len(sent)
            if self.queued <= BUFFER:
                self.room.set()
            await self.writer.drain()
            if end:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                return


class _Connection:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client, self.upstream = client, upstream
        self.tasks: list[asyncio.Task] = []

    def reset(self) -> None:
        for task in self.tasks:
            task.cancel()
        _reset(self.client)
        _reset(self.upstream)


class _ProxyServer:
    def __init__(self, target: str, delay_ms: float) -> None:
        self.target = target
        self.delay = delay_ms / 2000  # seconds, each way
        self.stalled_until = 0.0
        self.refusing_until = 0.0
        self.late = 0.0  # seconds the event loop wakes after the time asked (the median)
        self.connections: set[_Connection] = set()
        self.counts = {"accepted": 0, "refused": 0, "dropped": 0, "failed_upstream": 0}
        self.bytes = [0, 0]  # [towards the clients, towards the target]

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.target.startswith("unix:"):
            return await asyncio.open_unix_connection(self.target[5:], limit=CHUNK)
        host, _, port = self.target.rpartition(":")
        return await asyncio.open_connection(host, int(port), limit=CHUNK)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        self.counts["accepted"] += 1
        if loop.time() < self.refusing_until:
            self.counts["refused"] += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await self._open_target()
        except OSError as err:
            self.counts["failed_upstream"] += 1
            print(f"proxy: cannot reach {self.target}: {err}", file=sys.stderr, flush=True)
            _reset(writer)
            return
        connection = _Connection(writer, up_writer)
        self.connections.add(connection)
        try:
            async with asyncio.TaskGroup() as group:
                connection.tasks = [
                    group.create_task(self._one_way(_Direction(self, reader, up_writer, upstream=True))),
                    group.create_task(self._one_way(_Direction(self, up_reader, writer, upstream=False))),
                ]
        except* Exception:
            pass  # one end went away (reset, closed while writing...): the other goes too
        finally:
            self.connections.discard(connection)
            writer.close()
            up_writer.close()

    @staticmethod
    async def _one_way(direction: _Direction) -> None:
        """Until the end of the stream has been passed on, or either side fails (then at once)."""
        receiving = asyncio.create_task(direction.receive())
        sending = asyncio.create_task(direction.send())
        try:
            await asyncio.wait((receiving, sending), return_when=asyncio.FIRST_EXCEPTION)
            errors = [task.exception() for task in (receiving, sending) if task.done() and not task.cancelled()]
            for error in errors:
                if error is not None:
                    raise error
        finally:
            receiving.cancel()
            sending.cancel()

    def command(self, line: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        word, _, value = line.strip().partition(" ")
        try:
            number = float(value) if value else 0.0
        except ValueError:
            return {"error": f"not a number: {value!r}"}
        if word == "delay":
            self.delay = number / 2000
        elif word == "stall":
            self.stalled_until = max(self.stalled_until, loop.time() + number)
        elif word == "refuse":
            self.refusing_until = max(self.refusing_until, loop.time() + number)
        elif word == "drop":
            chosen = [c for c in list(self.connections) if random.random() < (number if value else 1.0)]
            for connection in chosen:
                connection.reset()
                self.connections.discard(connection)
            self.counts["dropped"] += len(chosen)
            return {"dropped": len(chosen)}
        elif word != "stats":
            return {"error": f"unknown command {word!r} (delay, stall, drop, refuse, stats)"}
        return {
            **self.counts,
            "open": len(self.connections),
            "bytes_to_clients": self.bytes[0],
            "bytes_to_target": self.bytes[1],
            "delay_ms": self.delay * 2000,
            "late_ms": round(self.late * 1000, 3),  # how late its timer fires (the median; made up for)
        }

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            line = (await reader.readline()).decode()
            writer.write(json.dumps(self.command(line)).encode() + b"\n")
            await writer.drain()
        writer.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    return host, int(port)


async def _serve(args: argparse.Namespace) -> None:
    # The network is not one of the processes that share the cores: ahead of them, it keeps
    # its delays when the machine is busy (as root; elsewhere it runs at the usual priority).
    with contextlib.suppress(OSError):
        os.nice(-10)
    proxy = _ProxyServer(args.target, args.delay_ms)
    addresses = [_address(text) for text in args.listen.split(",")]
    servers: list[asyncio.Server] = []
    for _ in range(20):  # the port picked on the first address may be taken on another: pick again
        shared = 0  # the port of the addresses given as ADDR:0
        try:
            for host, given in addresses:
                server = await asyncio.start_server(proxy.handle, host, given or shared, limit=CHUNK)
                servers.append(server)
                shared = shared or (0 if given else server.sockets[0].getsockname()[1])
            break
        except OSError:
            for server in servers:
                server.close()
            servers = []
            if not shared:  # a port given, or no port at all: picking again does not help
                raise
    else:
        raise OSError("no port free on every listen address")
    host, port = _address(args.control)
    control = await asyncio.start_server(proxy.control, host, port)
    print(json.dumps({"port": shared or addresses[0][1], "control": control.sockets[0].getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    for connection in list(proxy.connections):  # let each end, rather than cancel it mid-way
        connection.reset()
    await asyncio.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.netlab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    proxy = commands.add_parser("proxy", help="a delaying TCP proxy")
    proxy.add_argument("--listen", required=True, help="ADDR:PORT[,ADDR:PORT...]; port 0: one free on all")
    proxy.add_argument("--target", required=True, help="HOST:PORT or unix:PATH")
    proxy.add_argument("--delay-ms", type=float, default=0.0, help="added to every round trip (half each way)")
    proxy.add_argument("--control", default="127.0.0.1:0", help="ADDR:PORT for the control commands")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

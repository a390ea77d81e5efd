"""Interop test: the Python PeerJS client `peerjs-py` (0.1.1, on aiortc) against the real
`peerjs` binary (issue 8; PROTOCOL.md §11 behaviours 71 and 72).

Each test starts `peerjs --host 127.0.0.1 --port 0 --allow_discovery`, reads the port from the
`Started PeerServer on …, port: N, path: /` line on stderr, drives peerjs-py clients against
it, and always stops the server (SIGTERM, then SIGKILL of its process group). Every wait is
bounded. WebRTC uses host candidates on 127.0.0.1 only: no STUN/TURN server, no other address.

Run through scripts/test-interop.sh (it makes the venv and builds the binary). By hand:
    PEERJS_BINARY=.build/debug/peerjs .venv-interop/bin/python -m pytest Tests/interop -v
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import ssl
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

import aiohttp.connector
import aioice.ice
from aiortc import RTCConfiguration
from aiortc.rtcicetransport import RTCIceGatherer

from peerjs_py import Peer
from peerjs_py.logger import LogLevel, logger as peerjs_logger

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
STARTED = re.compile(r"Started PeerServer on (\S+), port: (\d+), path: (\S+)")

# Loopback only. aioice leaves 127.0.0.1 out of its host candidates and would offer this
# machine's other interface addresses instead, and aiortc falls back to a public STUN server
# when no ICE servers are configured. Pin both: one host candidate on 127.0.0.1, no STUN.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [HOST] if use_ipv4 else []
RTCIceGatherer.getDefaultIceServers = classmethod(lambda cls: [])

peerjs_logger.set_log_level(LogLevel.All if os.environ.get("PEERJS_PY_LOG") == "all" else LogLevel.Errors)
logging.getLogger("aiortc").setLevel(logging.WARNING)


# --------------------------------------------------------------------------- server


class Server:
    def __init__(self, binary: Path, log_path: Path, extra: list[str] | None = None, cafile: Path | None = None):
        self.log_path = log_path
        self.cafile = cafile
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--host", HOST, "--port", "0", "--allow_discovery"] + (extra or [])
            # Run as root, the broker drops to --user; `_peerjs` exists only where the package is installed.
            + (["--user", "nobody"] if os.geteuid() == 0 else []),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,  # its own process group: supervisor + broker
        )
        self.port = self._wait_started(timeout=20.0)
        if "--cluster" in (extra or []):
            self._wait_for("peer directory available", timeout=30.0)

    def _wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"peerjs exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"peerjs printed no '{text}' within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_started(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = STARTED.search(self.log())
            if m:
                return int(m.group(2))
            if self.proc.poll() is not None:
                raise RuntimeError(f"peerjs exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"peerjs printed no Started line within {timeout}s:\n{self.log()}")

    def peers(self) -> list[str]:
        scheme = "https" if self.cafile else "http"
        context = ssl.create_default_context(cafile=str(self.cafile)) if self.cafile else None
        url = f"{scheme}://{HOST}:{self.port}/peerjs/peers"
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group we started (a broker child that outlived it).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=peerjs interop test CA", "-keyout", str(ca_key), "-out", str(ca_cert))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return ca_cert, key, cert


@pytest.fixture(params=["ws", "wss"])
def server(request, tmp_path, monkeypatch):
    """The real binary, plain (ws://) or with TLS (wss://, a self-signed CA the client trusts)."""
    binary = Path(os.environ.get("PEERJS_BINARY", REPO / ".build" / "debug" / "peerjs"))
    if not binary.is_file():
        pytest.fail(f"no peerjs binary at {binary}: build it (swift build --product peerjs) or set PEERJS_BINARY")
    extra, cafile = [], None
    if request.param == "wss":
        cafile, key, cert = make_certificates(tmp_path)
        extra = ["--sslkey", str(key), "--sslcert", str(cert)]
        # The client is told to trust our CA: aiohttp (the WebSocket) made its verifying SSL
        # context at import, so the CA is added to that context; requests (the HTTP id fetch)
        # reads its bundle variable.
        aiohttp.connector._SSL_CONTEXT_VERIFIED.load_verify_locations(cafile=str(cafile))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cafile))
    srv = Server(binary, tmp_path / "peerjs.log", extra, cafile)
    SECURE["value"] = cafile is not None
    try:
        yield srv
        assert srv.proc.poll() is None, f"peerjs died during the test:\n{srv.log()}"
    finally:
        srv.stop()
        print(f"--- peerjs log ---\n{srv.log()}")


# --------------------------------------------------------------------------- client helpers


SECURE = {"value": False}


def options(port: int, path: str = "/") -> dict:
    return {
        "host": HOST,
        "port": port,
        "path": path,
        "key": "peerjs",
        "secure": SECURE["value"],
        "config": RTCConfiguration(iceServers=[]),
    }


def first(emitter, event: str) -> asyncio.Future:
    """A future resolved with the arguments of the next `event` on a pyee emitter."""
    fut = asyncio.get_running_loop().create_future()

    def handler(*args):
        if not fut.done():
            fut.set_result(args[0] if len(args) == 1 else args)

    emitter.once(event, handler)
    return fut


def collect(emitter, event: str) -> asyncio.Queue:
    queue: asyncio.Queue = asyncio.Queue()
    emitter.on(event, lambda *args: queue.put_nowait(args[0] if len(args) == 1 else args))
    return queue


def error_type(err) -> str:
    t = getattr(err, "type", None)
    return str(getattr(t, "value", t))


async def bounded(awaitable, seconds: float, what: str):
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out after {seconds}s waiting for {what}") from None


async def start_peer(peer_id: str, port: int, path: str = "/") -> tuple[Peer, asyncio.Queue]:
    peer = Peer(peer_id, options(port, path))
    errors = collect(peer, "error")  # pyee raises on an 'error' event nobody listens to
    opened = first(peer, "open")
    await bounded(peer.start(), 10, f"{peer_id}: Peer.start()")
    got = await bounded(asyncio.shield(opened), 10, f"{peer_id}: 'open' (errors: {drain(errors)})")
    assert got == peer_id
    return peer, errors


def drain(queue: asyncio.Queue) -> list:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return [f"{error_type(e)}: {e}" for e in items]


async def destroy(*peers: Peer) -> None:
    for peer in peers:
        try:
            await asyncio.wait_for(peer.destroy(), 10)
        except Exception:  # teardown of a client library; the assertions are done
            pass


def run(coro, seconds: float = 90):
    asyncio.run(asyncio.wait_for(coro, seconds))


# --------------------------------------------------------------------------- tests


def test_data_connection_both_ways(server):
    """Behaviour 71: two Peers register, open a DataConnection (OFFER/ANSWER relayed by the
    server, ICE candidates inside the SDP) and exchange a message each way over WebRTC."""
    run(data_connection_both_ways(server.port, "/", server.peers))


async def data_connection_both_ways(port: int, path: str, peers) -> None:
    """alice and bob register at `path`, alice connects to bob, one message goes each way;
    `peers()` lists the registered ids (discovery)."""
    alice = bob = None
    try:
        alice, alice_errors = await start_peer("alice", port, path)
        bob, bob_errors = await start_peer("bob", port, path)
        assert sorted(peers()) == ["alice", "bob"]

        incoming = first(bob, "connection")
        alice_conn = await bounded(alice.connect("bob"), 20, "alice.connect('bob')")
        assert alice_conn is not None, f"connect failed: {drain(alice_errors)}"

        bob_conn = await bounded(
            asyncio.shield(incoming), 20,
            f"bob's 'connection' event (OFFER relayed?) alice errors {drain(alice_errors)}, "
            f"bob errors {drain(bob_errors)}")
        assert bob_conn.peer == "alice"
        bob_inbox = collect(bob_conn, "data")
        await bounded(asyncio.shield(alice_conn.open_future), 20,
                      "alice's DataConnection to open (ANSWER relayed?)")
        assert alice_conn.open and bob_conn.open
        alice_inbox = collect(alice_conn, "data")

        await alice_conn.send({"from": "alice", "text": "hello bob"})
        got = await bounded(bob_inbox.get(), 20, "alice → bob message")
        assert got == {"from": "alice", "text": "hello bob"}

        await bob_conn.send({"from": "bob", "text": "hello alice"})
        got = await bounded(alice_inbox.get(), 20, "bob → alice message")
        assert got == {"from": "bob", "text": "hello alice"}

        assert drain(alice_errors) == [] and drain(bob_errors) == []
    finally:
        await destroy(*(p for p in (alice, bob) if p is not None))


def test_taken_id_gets_unavailable_id(server):
    """Behaviour 72: a second Peer asking for an id that is registered under another token gets
    the client error `unavailable-id` (the server's ID-TAKEN) and never opens; the owner stays."""

    async def scenario():
        owner = intruder = None
        try:
            owner, owner_errors = await start_peer("carol", server.port)

            intruder = Peer("carol", options(server.port))
            intruder_errors = collect(intruder, "error")
            intruder_opened = first(intruder, "open")
            await bounded(intruder.start(), 10, "intruder Peer.start()")
            err = await bounded(intruder_errors.get(), 10, "the intruder's 'error' event")
            assert error_type(err) == "unavailable-id", f"{error_type(err)}: {err}"
            assert str(err) == 'ID "carol" is taken'
            await asyncio.sleep(0.3)
            assert not intruder_opened.done(), "the intruder got OPEN for a taken id"

            assert server.peers() == ["carol"]
            assert owner._open and not owner._disconnected
            assert drain(owner_errors) == []
        finally:
            await destroy(*(p for p in (owner, intruder) if p is not None))

    run(scenario())


# --------------------------------------------------------------------------- cluster (issue 18)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """A scratch PostgreSQL (scripts/pg-scratch.sh) and two instances of one cluster on it."""
    if not any(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.skip("Debian's postgresql is not installed (scripts/setup.sh installs it)")
    binary = Path(os.environ.get("PEERJS_BINARY", REPO / ".build" / "debug" / "peerjs"))
    script = REPO / "scripts" / "pg-scratch.sh"
    # Not under tmp_path: pytest's directory is root's alone (0700) and the server runs as `postgres`.
    pg_dir = Path(tempfile.gettempdir()) / f"peerjs-interop-pg-{os.urandom(4).hex()}"
    pg_port, password = free_port(), "interop-" + os.urandom(6).hex()
    password_file = tmp_path / "pg.password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    subprocess.run(["bash", str(script), "start", str(pg_dir), str(pg_port), password], check=True, timeout=120)
    servers = []
    try:
        for name in ("a", "b"):
            extra = ["--cluster", f"postgres://peerjs@{HOST}:{pg_port}/peerjs", "--cluster-password-file", str(password_file),
                     "--cluster-instance", f"interop-{name}"]
            if os.geteuid() == 0 and not user_exists("_peerjs-cluster"):
                extra += ["--cluster-user", "nobody"]
            servers.append(Server(binary, tmp_path / f"peerjs-{name}.log", extra))
        SECURE["value"] = False
        yield servers
        for srv in servers:
            assert srv.proc.poll() is None, f"peerjs died during the test:\n{srv.log()}"
    finally:
        for srv in servers:
            srv.stop()
            print(f"--- peerjs log ({srv.log_path.name}) ---\n{srv.log()}")
        subprocess.run(["bash", str(script), "kill", str(pg_dir)], timeout=60)
        shutil.rmtree(pg_dir, ignore_errors=True)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_data_connection_across_instances(cluster):
    """Issue 18: alice on instance A and bob on instance B open a DataConnection (OFFER, ANSWER
    and candidates relayed between the instances through PostgreSQL) and exchange a message each
    way; each instance lists both ids; bob's id is ID-TAKEN (unavailable-id) through A."""
    a, b = cluster

    async def scenario():
        alice = bob = intruder = None
        try:
            alice, alice_errors = await start_peer("alice", a.port)
            bob, bob_errors = await start_peer("bob", b.port)
            for srv in (a, b):
                for _ in range(50):
                    if sorted(srv.peers()) == ["alice", "bob"]:
                        break
                    await asyncio.sleep(0.1)
                assert sorted(srv.peers()) == ["alice", "bob"]

            incoming = first(bob, "connection")
            alice_conn = await bounded(alice.connect("bob"), 20, "alice.connect('bob') across instances")
            assert alice_conn is not None, f"connect failed: {drain(alice_errors)}"
            bob_conn = await bounded(asyncio.shield(incoming), 20,
                                     f"bob's 'connection' on B (OFFER relayed from A?) errors {drain(alice_errors)} {drain(bob_errors)}")
            assert bob_conn.peer == "alice"
            bob_inbox = collect(bob_conn, "data")
            await bounded(asyncio.shield(alice_conn.open_future), 20, "alice's DataConnection to open (ANSWER relayed from B?)")
            alice_inbox = collect(alice_conn, "data")

            await alice_conn.send({"from": "alice", "text": "hello bob on B"})
            assert await bounded(bob_inbox.get(), 20, "alice → bob message") == {"from": "alice", "text": "hello bob on B"}
            await bob_conn.send({"from": "bob", "text": "hello alice on A"})
            assert await bounded(alice_inbox.get(), 20, "bob → alice message") == {"from": "bob", "text": "hello alice on A"}

            intruder = Peer("bob", options(a.port))
            intruder_errors = collect(intruder, "error")
            await bounded(intruder.start(), 10, "intruder Peer.start() on A")
            err = await bounded(intruder_errors.get(), 10, "the intruder's 'error' event")
            assert error_type(err) == "unavailable-id", f"{error_type(err)}: {err}"
            assert drain(alice_errors) == [] and drain(bob_errors) == []
        finally:
            await destroy(*(p for p in (alice, bob, intruder) if p is not None))

    run(scenario())


# --------------------------------------------------------------------------- embedded (issue 19)

EXAMPLE_STARTED = re.compile(r"peerjs-hummingbird-example listening on (\S+):(\d+)")


@pytest.fixture
def example_app(tmp_path):
    """examples/hummingbird: a Hummingbird app with a page at / and PeerJSKit at /peerjs."""
    binary = Path(os.environ.get("EXAMPLE_BINARY", REPO / ".build" / "debug" / "peerjs-hummingbird-example"))
    if not binary.exists():
        pytest.fail(f"no example binary at {binary}: swift build --product peerjs-hummingbird-example, or set EXAMPLE_BINARY")
    log_path = tmp_path / "example.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(binary), "--host", HOST, "--port", "0"], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, start_new_session=True)
    app = {"proc": proc, "log": lambda: log_path.read_text(errors="replace")}
    try:
        deadline = time.monotonic() + 30
        while True:
            match = EXAMPLE_STARTED.search(app["log"]())
            if match:
                app["port"] = int(match.group(2))
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the example app did not start (exit {proc.poll()}):\n{app['log']()}")
            time.sleep(0.05)
        yield app
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=5)
        log.close()


def test_embedded_in_hummingbird_example(example_app):
    """Issue 19: the example app serves its page at / and PeerJS signalling at /peerjs in one
    process; two peerjs-py Peers with `path: /peerjs` open a DataConnection through it, its auth
    hook refuses an `admin…` id, and SIGTERM stops it gracefully (exit 0)."""
    port = example_app["port"]
    with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5) as response:
        assert "PeerJS on Hummingbird" in response.read().decode()

    def peers() -> list[str]:
        with urllib.request.urlopen(f"http://{HOST}:{port}/peerjs/peerjs/peers", timeout=5) as response:
            return json.loads(response.read())

    async def refused():
        admin = Peer("admin1", options(port, "/peerjs"))
        errors = collect(admin, "error")
        try:
            await bounded(admin.start(), 10, "admin Peer.start()")
            err = await bounded(errors.get(), 10, "the admin's 'error' event")
            assert error_type(err) == "server-error" and "reserved" in str(err), f"{error_type(err)}: {err}"
        finally:
            await destroy(admin)

    run(data_connection_both_ways(port, "/peerjs", peers))
    run(refused(), 30)
    log = example_app["log"]()
    # The app's reader of PeerJSServer.events logs each one (the broker's own line has no id=).
    assert any("id=alice" in line and "connection" in line for line in log.splitlines()), log
    assert any("id=alice" in line and "disconnect" in line for line in log.splitlines()), log
    example_app["proc"].send_signal(signal.SIGTERM)
    assert example_app["proc"].wait(timeout=15) == 0, example_app["log"]()

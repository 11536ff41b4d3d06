"""Real ``prewarm`` processes for the tests: a store, a coordinator and agents on free ports.

The binary is ``$PREWARM_BIN``, else ``target/release/prewarm`` or ``target/debug/prewarm``
(under ``$CARGO_TARGET_DIR`` when set) of this repository, whichever is newer. A missing
binary fails the tests: they never pass without running against the real processes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]


def prewarm_bin() -> Path:
    """The ``prewarm`` binary under test."""
    if os.environ.get("PREWARM_BIN"):
        return Path(os.environ["PREWARM_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    found = [p for p in (target / "release/prewarm", target / "debug/prewarm") if p.exists()]
    if not found:
        pytest.fail(f"no prewarm binary under {target}: build it or set PREWARM_BIN")
    return max(found, key=lambda p: p.stat().st_mtime)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, seconds: float, check: Callable[[], bool]) -> None:
    """Polls ``check`` until true; fails the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def write_safetensors(path: Path, tensors: Dict[str, List[float]]) -> None:
    """Writes 1-D float32 ``tensors`` in the safetensors layout (standard library only)."""
    header, data, offset = {}, b"", 0
    for name, values in tensors.items():
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": [len(values)],
                        "data_offsets": [offset, offset + len(blob)]}
        data += blob
        offset += len(blob)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


class Cluster:
    """A store, a coordinator and agents, killed at teardown; logs under ``dir``."""

    def __init__(self, dir: Path, token: str) -> None:
        self.dir, self.token, self.bin = dir, token, prewarm_bin()
        self.store = dir / "store"
        self.procs: List[subprocess.Popen] = []
        self.agent_url = ""
        port = free_port()
        self.coordinator_url = f"http://127.0.0.1:{port}"
        self._coordinator_args = [
            "coordinator", "--store", str(self.store),
            "--listen", f"127.0.0.1:{port}",
            "--data-listen", f"127.0.0.1:{free_port()}",
            "--data-unix", str(dir / "data.sock"),
            "--poll", "200ms",
        ]

    def env(self, token: Optional[str]) -> Dict[str, str]:
        """The environment of a child: the token (or none)."""
        env = {k: v for k, v in os.environ.items() if k != "PREWARM_TOKEN"}
        if token:
            env["PREWARM_TOKEN"] = token
        return env

    def run(self, *args: str) -> str:
        """Runs a ``prewarm`` command to completion; its stdout."""
        out = subprocess.run([str(self.bin), *args], env=self.env(self.token),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"prewarm {' '.join(args)}: {out.stderr}"
        return out.stdout

    def spawn(self, log: str, *args: str) -> subprocess.Popen:
        """Starts a long-running ``prewarm`` command, logging to ``dir/log``."""
        with open(self.dir / log, "wb") as f:
            p = subprocess.Popen([str(self.bin), *args, "--log", "info"],
                                 env=self.env(self.token), stdout=subprocess.DEVNULL, stderr=f)
        self.procs.append(p)
        return p

    def snapshot(self, resource: str, path: Path) -> None:
        """Commits ``path`` as ``resource``'s next version."""
        self.run("snapshot", "--store", str(self.store), "--no-fsync",
                 "--resource", resource, str(path))

    def start_coordinator(self) -> None:
        """Starts the coordinator and waits until it answers."""
        self.spawn("coordinator.log", *self._coordinator_args)
        wait_until("the coordinator", 30, lambda: self._status() is not None)

    def _status(self) -> Optional[dict]:
        out = subprocess.run([str(self.bin), "status", "--coordinator", self.coordinator_url,
                              "--json"], env=self.env(self.token), capture_output=True)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def attached(self, name: str) -> bool:
        """Whether agent ``name`` is attached to the coordinator."""
        status = self._status() or {"capacities": []}
        return any(c["capacity"] == name and c["connected"] for c in status["capacities"])

    def agent(self, name: str, *extra: str, coordinator: Optional[str] = None) -> str:
        """Starts agent ``name`` and returns its URL, once it answers (and, on this
        cluster's coordinator, once it is attached)."""
        port = free_port()
        self.spawn(f"{name}.log", "agent", "--name", name,
                   "--coordinator", coordinator or self.coordinator_url,
                   "--cache-dir", str(self.dir / name), "--listen", f"127.0.0.1:{port}", *extra)
        wait_until(f"agent {name}", 30, lambda: _listening(port))
        if coordinator is None:
            wait_until(f"agent {name} to attach", 30, lambda: self.attached(name))
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Kills every process started."""
        for p in self.procs:
            p.kill()
            p.wait()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A coordinator with a small model directory ``models/tiny`` in its store, and agent
    ``cap-a`` (1 GiB cache), all requiring a token."""
    dir = tmp_path_factory.mktemp("cluster")
    c = Cluster(dir, secrets.token_hex(16))
    model = dir / "src/tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"layers": 1, "dim": 4}))
    write_safetensors(model / "model.safetensors",
                      {"w": [0.5, -1.0, 2.0, 4.0], "b": [0.25]})
    c.snapshot("models/tiny", model)
    c.start_coordinator()
    c.agent_url = c.agent("cap-a", "--cache-size", "1GiB")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture()
def blob(cluster: Cluster, request: pytest.FixtureRequest) -> Callable[[int], str]:
    """Commits a fresh resource of ``n`` random bytes named after the test; its id."""
    def make(n: int) -> str:
        name = re.sub(r"[^a-z0-9.-]+", "-", request.node.name.lower())
        resource = f"blobs/{name}-{secrets.token_hex(4)}"
        path = cluster.dir / resource.replace("/", "_")
        path.write_bytes(os.urandom(n))
        cluster.snapshot(resource, path)
        return resource
    return make

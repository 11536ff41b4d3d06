"""The clients over mutual TLS against a real coordinator and agent started with
``--tls-cert/--tls-key/--tls-client-ca``, certificates made by the ``openssl`` command:
with the CA and a client certificate an event moves a state and ``ensure`` hits; without a
client certificate, with one another CA signed, or trusting another CA, the call fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from prewarm import Agent, ConnectionFailed, Coordinator, Event

from conftest import _listening, free_port, prewarm_bin, wait_until


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(dir: Path, name: str) -> Dict[str, Path]:
    """A self-signed CA: its certificate and key."""
    ca = {"cert": dir / f"{name}-ca.pem", "key": dir / f"{name}-ca.key"}
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(ca["key"]), "-out", str(ca["cert"]), "-days", "1",
             "-subj", f"/CN={name} test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign")
    return ca


def _issue(dir: Path, ca: Dict[str, Path], who: str) -> Dict[str, Path]:
    """A certificate for ``who`` (server for 127.0.0.1 and localhost, and client)."""
    out = {"cert": dir / f"{who}.pem", "key": dir / f"{who}.key"}
    csr, ext = dir / f"{who}.csr", dir / f"{who}.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   "extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(out["key"]), "-out", str(csr), "-subj", f"/CN={who}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca["cert"]), "-CAkey", str(ca["key"]),
             "-CAcreateserial", "-out", str(out["cert"]), "-days", "1", "-extfile", str(ext))
    return out


def _server_flags(ca: Dict[str, Path], me: Dict[str, Path]) -> List[str]:
    return ["--tls-cert", str(me["cert"]), "--tls-key", str(me["key"]),
            "--tls-client-ca", str(ca["cert"])]


@pytest.mark.skipif(shutil.which("openssl") is None and not os.environ.get("CI"),
                    reason="the openssl command makes the certificates (CI installs it)")
def test_clients_over_mutual_tls_need_a_certificate_the_ca_signed(tmp_path: Path) -> None:
    ca, rogue = _ca(tmp_path, "fleet"), _ca(tmp_path, "rogue")
    coord, agent_id, app = (_issue(tmp_path, ca, w) for w in ("coordinator", "agent", "app"))
    stranger = _issue(tmp_path, rogue, "stranger")
    bin, procs = prewarm_bin(), []
    store, blob = tmp_path / "store", tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(300 << 10))
    env = {k: v for k, v in os.environ.items() if k != "PREWARM_TOKEN"}
    subprocess.run([str(bin), "snapshot", "--store", str(store), "--no-fsync",
                    "--resource", "blobs/tls", str(blob)], check=True, env=env)
    port, api = free_port(), free_port()
    url, api_url = f"https://127.0.0.1:{port}", f"https://127.0.0.1:{api}"

    def spawn(log: str, *args: str) -> None:
        with open(tmp_path / log, "wb") as f:
            procs.append(subprocess.Popen([str(bin), *args], env=env,
                                          stdout=subprocess.DEVNULL, stderr=f))
    try:
        spawn("coordinator.log", "coordinator", "--store", str(store),
              "--listen", f"127.0.0.1:{port}", "--data-listen", f"127.0.0.1:{free_port()}",
              "--data-unix", "none", *_server_flags(ca, coord))
        spawn("agent.log", "agent", "--name", "cap-a", "--coordinator", url,
              "--cache-dir", str(tmp_path / "cap-a"), "--listen", f"127.0.0.1:{api}",
              "--data-path", "tcp", "--tls-ca", str(ca["cert"]), *_server_flags(ca, agent_id))
        wait_until("the agent's API", 30, lambda: _listening(api))
        coordinator = Coordinator(url, ca=str(ca["cert"]), cert=str(app["cert"]),
                                  key=str(app["key"]))
        agent = Agent(api_url, ca=str(ca["cert"]), cert=str(app["cert"]), key=str(app["key"]))

        def attached() -> bool:
            try:
                out = coordinator.post_events([Event(key="s", needs=["blobs/tls"])])
            except ConnectionFailed:
                return False
            return out[0].placement is not None
        wait_until("the agent to attach over TLS", 30, attached)
        wait_until("the state to arrive", 30, lambda: any(
            s["resource"] == "blobs/tls" for s in agent.inventory()["states"]))
        state = agent.ensure("blobs/tls")
        assert state.hit and Path(state.path).read_bytes() == blob.read_bytes()

        for bad in (Agent(api_url, ca=str(ca["cert"])),
                    Agent(api_url, ca=str(ca["cert"]), cert=str(stranger["cert"]),
                          key=str(stranger["key"])),
                    Agent(api_url, ca=str(rogue["cert"]), cert=str(app["cert"]),
                          key=str(app["key"])),
                    Agent(f"http://127.0.0.1:{api}"),
                    Coordinator(url, ca=str(ca["cert"]))):
            with pytest.raises(ConnectionFailed):
                bad.inventory() if isinstance(bad, Agent) else bad.post_events([])
    finally:
        for p in procs:
            p.kill()
            p.wait()

"""``Agent.ensure`` and the lease context manager against a real agent and coordinator."""

from __future__ import annotations

import json
import time

import pytest

from prewarm import Agent, UnknownLease

from conftest import Cluster, wait_until


def leased(agent: Agent, resource: str) -> bool:
    """The inventory's ``leased`` flag of ``resource``'s newest held version."""
    held = [s for s in agent.inventory()["states"] if s["resource"] == resource]
    assert held, f"{resource} is not held"
    return max(held, key=lambda s: s["version"])["leased"]


def test_ensure_fetches_on_a_miss_then_hits(cluster: Cluster) -> None:
    agent = Agent(cluster.agent_url, cluster.token)
    first = agent.ensure("models/tiny", timeout=30, key="tenant-1", type="http")
    assert (first.resource, first.version) == ("models/tiny", 1)
    assert json.loads((first.path / "config.json").read_text()) == {"layers": 1, "dim": 4}
    src = cluster.dir / "src/tiny/model.safetensors"
    assert (first.path / "model.safetensors").read_bytes() == src.read_bytes()
    assert first.lease is not None and first.lease_ms == 60_000
    assert first.miss_reason == "never fetched here" or first.hit
    again = agent.ensure("models/tiny", min_version=1, max_stale=0)
    assert again.hit and again.version == 1 and again.path == first.path
    assert again.miss_reason is None
    assert again.lease != first.lease
    inv = agent.inventory()
    assert inv["capacity"] == "cap-a"
    assert any(s["resource"] == "models/tiny" and s["version"] == 1 for s in inv["states"])


def test_a_new_version_is_served_when_asked_for(cluster: Cluster, tmp_path) -> None:
    agent = Agent(cluster.agent_url, cluster.token)
    model = tmp_path / "m"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"v1" * 1000)
    cluster.snapshot("models/versioned", model)
    assert agent.ensure("models/versioned").version == 1
    (model / "weights.bin").write_bytes(b"v2" * 1000)
    cluster.snapshot("models/versioned", model)
    v2 = agent.ensure("models/versioned", min_version=2, timeout=30)
    assert v2.version == 2
    assert (v2.path / "weights.bin").read_bytes() == b"v2" * 1000


def test_holding_keeps_the_lease_past_its_length_and_releases_it(cluster: Cluster, blob) -> None:
    agent = Agent(cluster.agent_url, cluster.token)
    resource = blob(64 << 10)
    # Without the context manager, a short lease runs out by itself.
    bare = agent.ensure(resource, lease=0.3)
    assert bare.lease_ms == 300 and leased(agent, resource)
    wait_until("the bare lease to expire", 5, lambda: not leased(agent, resource))
    # Inside the block the lease is renewed (every 0.4 s): still held after 2.5 times its
    # length.
    with agent.holding(resource, lease=1.2) as state:
        assert state.version == 1 and state.path.exists()
        time.sleep(3.0)
        assert leased(agent, resource), "renewed while the block runs"
        lease = state.lease
    assert not leased(agent, resource), "released at once when the block exits"
    with pytest.raises(UnknownLease):
        agent.release(lease)


def test_holding_releases_the_lease_when_the_block_raises(cluster: Cluster, blob) -> None:
    agent = Agent(cluster.agent_url, cluster.token)
    resource = blob(64 << 10)
    with pytest.raises(RuntimeError, match="boom"):
        with agent.holding(resource, lease=60) as state:
            assert leased(agent, resource)
            raise RuntimeError("boom")
    assert not leased(agent, resource)
    with pytest.raises(UnknownLease):
        agent.renew(state.lease)


def test_renew_and_release_by_id(cluster: Cluster, blob) -> None:
    agent = Agent(cluster.agent_url, cluster.token)
    resource = blob(64 << 10)
    state = agent.ensure(resource, lease=60)
    assert agent.renew(state.lease, 0.2) == 200
    wait_until("the shortened lease to expire", 5, lambda: not leased(agent, resource))
    with pytest.raises(UnknownLease):
        agent.renew(state.lease)
    other = agent.ensure(resource)
    assert agent.renew(other.lease) == 60_000, "the agent's --lease by default"
    agent.release(other.lease)
    assert not leased(agent, resource)

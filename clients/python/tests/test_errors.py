"""Every typed exception, provoked from a real agent or coordinator."""

from __future__ import annotations

import pytest

import prewarm
from prewarm import (
    Agent,
    BadRequest,
    CacheFull,
    ConnectionFailed,
    Coordinator,
    Event,
    Forbidden,
    InvalidResource,
    NoSource,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    UnknownLease,
    UnknownState,
)

from conftest import Cluster, free_port


@pytest.fixture()
def agent(cluster: Cluster) -> Agent:
    return Agent(cluster.agent_url, cluster.token)


@pytest.mark.parametrize("resource", ["bad id", "a//b", "../etc"])
def test_an_invalid_id_is_400_invalid_resource(agent: Agent, resource: str) -> None:
    with pytest.raises(InvalidResource) as e:
        agent.ensure(resource)
    assert (e.value.status, e.value.kind) == (400, "invalid_resource")
    assert isinstance(e.value, BadRequest)


@pytest.mark.parametrize("kwargs", [{"min_version": 0}, {"timeout": 601}, {"lease": 0},
                                    {"lease": 3601}])
def test_a_bad_parameter_is_400(agent: Agent, kwargs: dict) -> None:
    with pytest.raises(BadRequest) as e:
        agent.ensure("models/tiny", **kwargs)
    assert (e.value.status, e.value.kind) == (400, "bad_request"), e.value


def test_an_unknown_resource_or_version_is_404_unknown_state(agent: Agent) -> None:
    with pytest.raises(UnknownState) as e:
        agent.ensure("models/none", timeout=5)
    assert (e.value.status, e.value.kind) == (404, "unknown_state")
    assert "no versions" in e.value.message
    with pytest.raises(UnknownState):
        agent.ensure("models/tiny", min_version=99, timeout=5)


def test_a_missing_or_wrong_token_is_401(cluster: Cluster) -> None:
    for token in (None, "0123456789abcdef-wrong"):
        with pytest.raises(Unauthorized) as e:
            Agent(cluster.agent_url, token).ensure("models/tiny")
        assert (e.value.status, e.value.kind) == (401, "unauthorized")
        with pytest.raises(Unauthorized):
            Agent(cluster.agent_url, token).inventory()
        with pytest.raises(Unauthorized):
            Coordinator(cluster.coordinator_url, token).post_events([Event(key="k")])
        with pytest.raises(Unauthorized):
            Coordinator(cluster.coordinator_url, token).placement("k")


def test_a_token_scoped_to_another_tenant_is_403_forbidden(cluster: Cluster) -> None:
    """An agent whose API takes a tokens file (``prewarm token new``): a tenant's token may
    ensure its own prefix only, and a state outside it is refused without saying whether it
    exists."""
    tokens, secret = cluster.dir / "tokens.toml", cluster.dir / "acme.secret"
    entry = cluster.run("token", "new", "--name", "acme", "--prefix", "tenants/acme/",
                        "--cap", "ensure", "--secret-file", str(secret))
    tokens.write_text(entry)
    url = cluster.agent("cap-tenants", "--cache-size", "64MiB", "--tokens", str(tokens))
    acme = Agent(url, secret.read_text().strip())
    for resource in ("models/tiny", "models/none"):
        with pytest.raises(Forbidden) as e:
            acme.ensure(resource, timeout=5)
        assert (e.value.status, e.value.kind) == (403, "forbidden"), e.value
    with pytest.raises(UnknownState):
        acme.ensure("tenants/acme/none", timeout=5)
    # The fleet's shared token still serves everything on that agent.
    assert Agent(url, cluster.token).ensure("models/tiny", timeout=30).version >= 1


def test_a_miss_not_ready_in_time_is_504_and_the_fetch_continues(agent: Agent, blob) -> None:
    resource = blob(8 << 20)
    with pytest.raises(NotReady) as e:
        agent.ensure(resource, timeout=0)
    assert (e.value.status, e.value.kind) == (504, "timeout")
    assert isinstance(e.value, TimeoutError)
    assert agent.ensure(resource, timeout=30).version == 1


def test_a_cache_full_of_leased_states_is_507(cluster: Cluster, blob) -> None:
    small = Agent(cluster.agent("cap-small", "--cache-size", "1MiB"), cluster.token)
    with pytest.raises(CacheFull) as e:
        small.ensure(blob(2 << 20), timeout=30)
    assert (e.value.status, e.value.kind) == (507, "cache_full")


def test_an_agent_without_a_coordinator_is_503_no_source(cluster: Cluster) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    lonely = Agent(cluster.agent("cap-lonely", coordinator=dead), cluster.token)
    with pytest.raises(NoSource) as e:
        lonely.ensure("models/tiny", timeout=30)
    assert (e.value.status, e.value.kind) == (503, "no_source")


def test_an_agent_holding_its_max_leases_is_503_overloaded(cluster: Cluster, blob) -> None:
    capped = Agent(cluster.agent("cap-capped", "--max-leases", "1"), cluster.token)
    resource = blob(4096)
    held = capped.ensure(resource, timeout=30)
    with pytest.raises(Overloaded) as e:
        capped.ensure(resource, timeout=30)
    assert (e.value.status, e.value.kind) == (503, "overloaded")
    assert e.value.retry_after is not None and e.value.retry_after >= 1
    capped.release(held.lease)
    assert capped.ensure(resource, timeout=30).hit


def test_an_unknown_lease_is_404(agent: Agent) -> None:
    for call in (agent.release, agent.renew):
        with pytest.raises(UnknownLease) as e:
            call(2**62)
        assert (e.value.status, e.value.kind) == (404, "unknown_lease")


def test_bad_events_are_400_and_too_many_413(cluster: Cluster) -> None:
    c = Coordinator(cluster.coordinator_url, cluster.token)
    with pytest.raises(BadRequest) as e:
        c.post_events([{"event": {"type": "http", "key": "s1"}, "colour": 1}])
    assert (e.value.status, e.value.kind) == (400, "bad_events")
    assert "colour" in e.value.message
    with pytest.raises(BadRequest):
        c.post_events([Event(key="s1", capacity="not a capacity")])
    with pytest.raises(PayloadTooLarge) as e:
        c.post_events([Event(key="s1")] * 10_001)
    assert e.value.status == 413


def test_nothing_listening_is_connection_failed() -> None:
    with pytest.raises(ConnectionFailed) as e:
        Agent(f"127.0.0.1:{free_port()}").ensure("models/tiny")
    assert e.value.status is None
    assert isinstance(e.value, prewarm.PrewarmError)

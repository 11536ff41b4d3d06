"""``Coordinator.post_events`` and ``.placement`` against a real coordinator and agent."""

from __future__ import annotations

from prewarm import Agent, Coordinator, Event

from conftest import Cluster, wait_until


def test_an_event_that_needs_a_state_moves_it_before_the_execution(cluster: Cluster, blob) -> None:
    coordinator = Coordinator(cluster.coordinator_url, cluster.token)
    agent = Agent(cluster.agent_url, cluster.token)
    resource = blob(256 << 10)
    out = coordinator.post_events([
        Event(key="session-1", type="http", needs=[resource], capacity="cap-a"),
        {"event": {"type": "timer", "key": "session-2"}, "capacity": "cap-a"},
    ])
    assert len(out) == 2
    assert out[0].placement is not None
    assert (out[0].placement.capacity, out[0].placement.reason) == ("cap-a", "named")
    moved = {t.resource: t for t in out[0].transfers}
    assert resource in moved, out[0]
    assert (moved[resource].version, moved[resource].bytes) == (1, 256 << 10)
    wait_until("the predictive transfer", 30, lambda: any(
        s["resource"] == resource for s in agent.inventory()["states"]))
    assert agent.ensure(resource, key="session-1").hit


def test_placement_answers_without_moving_anything(cluster: Cluster) -> None:
    coordinator = Coordinator(cluster.coordinator_url, cluster.token)
    named = coordinator.placement("session-9", type="http", capacity="cap-a")
    assert named.placement is not None
    assert (named.placement.capacity, named.placement.reason) == ("cap-a", "named")
    anywhere = coordinator.placement("session-9")
    assert anywhere.placement is not None
    assert anywhere.placement.capacity.startswith("cap-")
    # A probability mass, summed in floating point (seen at 1 + 7e-11).
    assert 0.0 <= anywhere.placement.held_probability <= 1.0 + 1e-6

//! A duplicated request installs once and counts its bytes once. With everything else
//! settled (every attach stream cut and reattached, so that the coordinator waits for
//! nothing) and every link's faults off, the same state is asked of one agent by two
//! transfer requests at once, the first `Load` delivered twice and the installing load's
//! acknowledgement sent twice. Then: at most one load installed it (the others found it
//! held); the agent's completed transfers and wire bytes grew by exactly the installs it
//! acknowledged (checked when no load the agent started itself ran near the step); the
//! coordinator counted each transfer's bytes once, those of the acknowledgement that
//! answered it (a `Load` delivered twice can be answered twice, and differently: a failure,
//! then the install — the gRPC stream never repeats a command, so the first answer is the
//! one), and its record of predictive deliveries grew by the bytes of each install whose
//! acknowledgement it accepted, once, however many times that came. Counters are read when
//! nothing is being acknowledged and nothing changed over a short pause (a refresh after an
//! invalidation may complete at any time).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prewarm_coordinator::Coordinator;

use crate::link::{AckSeen, Link};
use crate::world::World;

/// Transfers the agent completed, all priorities.
fn completed(agent: &prewarm_agent::Agent) -> u64 {
    ["on_demand", "predictive"]
        .iter()
        .map(|p| {
            agent
                .registry
                .counter(
                    "prewarm_agent_transfers_total",
                    "Transfers completed, by priority.",
                    &[("priority", p)],
                )
                .get()
        })
        .sum()
}

/// The counters at one quiet moment.
#[derive(PartialEq, Debug)]
struct Counts {
    /// Per link, acknowledgements recorded.
    acks: Vec<usize>,
    /// The agent's completed transfers and wire bytes.
    agent: (u64, u64),
    /// The coordinator's wire bytes and predictive bytes delivered.
    coordinator: (u64, u64),
}

async fn quiet(links: &[Arc<Link>], node: usize, c: &Coordinator) -> Result<Counts, String> {
    let read = || Counts {
        acks: links.iter().map(|l| l.stats().acks.len()).collect(),
        agent: (
            completed(&links[node].agent),
            links[node].agent.metrics.wire_bytes.get(),
        ),
        coordinator: (c.metrics.wire_bytes.get(), c.pulse.read().1.delivered_bytes),
    };
    let t0 = Instant::now();
    loop {
        let before = read();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sending: u64 = links.iter().map(|l| l.sending()).sum();
        if sending == 0 && read() == before {
            return Ok(before);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return Err("hang: acknowledgements never stopped coming".into());
        }
    }
}

/// Cuts every attach stream and waits until each is back and the coordinator waits for no
/// transfer (one whose `Load` or acknowledgement was lost waits for its timeout otherwise).
async fn cut_all(links: &[Arc<Link>], c: &Coordinator) -> Result<(), String> {
    let sessions: Vec<u64> = links.iter().map(|l| l.stats().sessions).collect();
    links.iter().for_each(|l| l.break_stream());
    let t0 = Instant::now();
    let back = || {
        links
            .iter()
            .zip(&sessions)
            .all(|(l, s)| l.stats().sessions > *s)
    };
    while !c.settled() || !back() {
        if t0.elapsed() > Duration::from_secs(20) {
            return Err(
                "hang: the coordinator still waits for transfers to capacities that left".into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// What the step saw: the counters before and after, the acknowledgements between.
struct Seen {
    before: Counts,
    after: Counts,
    /// Installs acknowledged by any agent.
    all: Vec<AckSeen>,
    /// Installs acknowledged by the agent asked.
    mine: Vec<AckSeen>,
    /// No load the agent started itself was acknowledged near the step.
    alone: bool,
    /// Wire bytes of the transfer requests' answers.
    answered: u64,
}

impl World {
    /// The duplicate step on agent `node` and resource `res`.
    pub async fn duplicate(
        &mut self,
        node: usize,
        res: usize,
        on_demand: bool,
    ) -> Result<(), String> {
        self.quiet = true;
        let band = self.nodes[node]
            .up
            .as_ref()
            .map(|u| u.link.stats().acks.len());
        self.settle().await?;
        let (true, Some((c, _))) = (
            self.nodes.iter().all(|n| n.up.is_some()),
            self.coordinator(),
        ) else {
            self.quiet = false;
            self.note("  skipped: an agent or the coordinator is down".into());
            return Ok(());
        };
        let links: Vec<Arc<Link>> = self
            .nodes
            .iter()
            .map(|n| n.up.as_ref().expect("up").link.clone())
            .collect();
        let seen = self
            .provoke(&links, &c, (node, res, on_demand), band.unwrap_or(0))
            .await;
        self.quiet = false;
        links.iter().for_each(|l| l.calm(false));
        self.judge(node, res, &seen?)
    }

    /// Two transfer requests for the newest version of `res` on `node`, the first `Load`
    /// and the installing acknowledgement delivered twice, between two quiet snapshots.
    async fn provoke(
        &mut self,
        links: &[Arc<Link>],
        c: &Coordinator,
        (node, res, on_demand): (usize, usize, bool),
        band: usize,
    ) -> Result<Seen, String> {
        cut_all(links, c).await?;
        let v = self.cat.res[res].newest();
        let before = quiet(links, node, c).await?;
        let answered = self.answered_wire;
        links[node].force_duplicate(self.cat.res[res].id.as_str(), v.get());
        self.start_transfer(node, res, Some(v), on_demand);
        self.start_transfer(node, res, Some(v), on_demand);
        self.settle().await?;
        let after = quiet(links, node, c).await?;
        let new = |i: usize| -> Vec<AckSeen> {
            links[i].stats().acks[before.acks[i]..after.acks[i]].to_vec()
        };
        let all = (0..links.len()).flat_map(new).filter(|a| a.fresh).collect();
        let mine = new(node).into_iter().filter(|a| a.fresh).collect();
        // A load the agent started itself (a refresh after an invalidation) may straddle a
        // snapshot: counted before it, acknowledged after. None ran near this step when none
        // was acknowledged from its start to a while after its end.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let alone = links[node].stats().acks[band..].iter().all(|a| a.commanded);
        let answered = self.answered_wire - answered;
        Ok(Seen {
            before,
            after,
            all,
            mine,
            alone,
            answered,
        })
    }

    /// The step's verdict.
    fn judge(&mut self, node: usize, res: usize, s: &Seen) -> Result<(), String> {
        let (r, v) = (self.cat.res[res].id.clone(), self.cat.res[res].newest());
        let this = s
            .mine
            .iter()
            .filter(|a| a.resource == r.as_str() && a.version == v.get())
            .count();
        self.note(format!(
            "  {this} installs of {r}@{v}, {} installs in all",
            s.all.len()
        ));
        if this > 1 {
            return Err(format!(
                "c{node} installed {r}@{v} {this} times for one duplicated request"
            ));
        }
        if !s.alone {
            self.note("  the agent's counters not compared: a refresh ran beside".into());
        }
        let wire: u64 = s.mine.iter().map(|a| a.wire).sum();
        let (b, a) = (s.before.agent, s.after.agent);
        if s.alone && a != (b.0 + s.mine.len() as u64, b.1 + wire) {
            return Err(format!(
                "c{node} counted {} transfers and {} B for {} installs of {wire} B",
                a.0 - b.0,
                a.1 - b.1,
                s.mine.len()
            ));
        }
        let counted = s.after.coordinator.0 - s.before.coordinator.0;
        if counted != s.answered {
            return Err(format!(
                "the coordinator counted {counted} B for transfers answered with {} B",
                s.answered
            ));
        }
        self.tally.duplicates += 1;
        let pushed: u64 = s
            .all
            .iter()
            .filter(|a| a.predictive && a.accepted)
            .map(|a| a.bytes)
            .sum();
        let counted = s.after.coordinator.1 - s.before.coordinator.1;
        if counted != pushed {
            return Err(format!(
                "the coordinator recorded {counted} B of predictive deliveries for {pushed} B delivered (an acknowledgement counted twice?)"
            ));
        }
        Ok(())
    }
}

//! The end of a seed: the faults healed, whatever is down restarted, every attach stream cut
//! and reattached. Then the liveness that needs quiet: the coordinator waits for no
//! transfer; an agent whose newest version of a resource is older than the newest committed
//! is told of it; and every agent serves the newest version of every state that fits its
//! budget (and refuses the others as too big, nothing else).

use std::time::{Duration, Instant};

use prewarm_agent::{EnsureError, EnsureRequest, LoadError, SpaceError};

use crate::world::World;

/// How long the coordinator may take to stop waiting once every capacity reattached.
const SETTLE: Duration = Duration::from_secs(30);

impl World {
    /// The end of a seed: faults healed, everything restarted and reattached; then nothing
    /// may be left waiting, and every state that fits must be served at its newest version.
    pub async fn drain(&mut self) -> Result<(), String> {
        self.faults.set_rate(0);
        self.faults.open();
        self.rates = Default::default();
        self.quiet = true;
        if self.coordinator().is_none() {
            self.start_coordinator().await?;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].up.is_none() {
                self.start_agent(i).await?;
            }
        }
        self.settle().await?;
        for n in &self.nodes {
            let l = &n.up.as_ref().expect("started above").link;
            l.calm(true);
            l.break_stream();
        }
        let (c, _) = self.coordinator().expect("started above");
        let t0 = Instant::now();
        self.note(format!("  settled in {:?}", t0.elapsed()));
        while !c.settled() {
            if t0.elapsed() > SETTLE {
                return Err("hang: with every capacity reattached, the coordinator still waits for transfers".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(c);
        self.note(format!(
            "  the coordinator waits for nothing after {:?}",
            t0.elapsed()
        ));
        self.settle().await?;
        self.told_of_the_newest().await?;
        self.serve_everything().await?;
        self.note(format!("  everything served after {:?}", t0.elapsed()));
        self.check().await
    }

    /// Every agent whose newest version of a resource is older than the newest committed is
    /// told of that one (the coordinator checks every 50 ms), or has it, within 2 s.
    async fn told_of_the_newest(&mut self) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            let mut behind = Vec::new();
            for (i, n) in self.nodes.iter().enumerate() {
                let up = n.up.as_ref().expect("started");
                let (held, _, _) = up.agent.inventory();
                let told = up.link.stats().told.clone();
                for r in &self.cat.res {
                    let newest_held = held
                        .iter()
                        .filter(|(h, _)| h.resource == r.id)
                        .map(|(h, _)| h.version)
                        .max();
                    let old = newest_held.is_some_and(|v| v < r.newest());
                    if old && told.get(&r.id) < Some(&r.newest()) {
                        behind.push(format!("c{i} {}", r.id));
                    }
                }
            }
            if behind.is_empty() {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(2) {
                return Err(format!(
                    "never told of the newest version, holding an older one: {behind:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every agent, its leases released, serves the newest version of every resource that
    /// fits its budget (and refuses the others as too big, nothing else).
    async fn serve_everything(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let budget = self.nodes[i].cfg.cache_size;
            let up = self.nodes[i].up.as_mut().expect("started");
            for k in up.leases.drain(..) {
                up.agent.release_lease(k.id);
            }
            let agent = up.agent.clone();
            for r in &self.cat.res {
                let newest = r.newest();
                let req = EnsureRequest {
                    resource: r.id.clone(),
                    min_version: Some(newest),
                    timeout: Duration::from_secs(20),
                    key: None,
                    kind: None,
                    max_stale: None,
                };
                let a = agent.clone();
                let h = up.handle().spawn(async move { a.ensure(req).await });
                let got = h.await.map_err(|e| e.to_string())?;
                let too_big = r.sizes[&newest] > budget;
                match got {
                    Ok(e) if e.version == newest.get() && !too_big => {
                        e.lease.map(|id| agent.release_lease(id));
                    }
                    Err(EnsureError::Load(LoadError::Space(SpaceError::Full { .. })))
                        if too_big => {}
                    other => {
                        let held: Vec<String> = agent
                            .inventory()
                            .0
                            .iter()
                            .map(|(h, _)| {
                                format!(
                                    "{}@{} leased {}",
                                    h.resource,
                                    h.version,
                                    agent.leased(&h.resource, h.version)
                                )
                            })
                            .collect();
                        return Err(format!(
                            "after healing, c{i} answers ensure({}, min v{newest}) with {other:?} (size {}, budget {budget}; holding {held:?}; staged {:?})",
                            r.id,
                            r.sizes[&newest],
                            agent.staged()
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

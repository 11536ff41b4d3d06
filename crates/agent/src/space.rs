//! The local state space: installed states live at `<dir>/states/<resource>/v<version>`, one
//! directory (or file) per resource version, readable by the application. An index
//! (`<dir>/index.json`, replaced atomically) records each state's size and last use; on open
//! it is checked against the disk, so a state deleted behind the agent's back is forgotten and
//! leftovers of interrupted installs are removed.
//!
//! Removing a state is as atomic as installing one: its path is first renamed into
//! `<dir>/trash/` (one `rename`, so the state vanishes from `states/` whole), then the index
//! is saved, and only then are the bytes deleted, on a background thread. A crash at any
//! moment leaves either the complete state at its path or nothing there; whatever is left in
//! `trash/` is deleted on the next open. (The open-time check of each state's tree against its
//! saved manifest, in the agent, catches a state damaged any other way.)
//!
//! Installing is two-phase: [`StateSpace::begin`] reserves the bytes (evicting states no one
//! leases, by the decision engine's rule: the agent owns a [`CacheBook`], the same code the
//! replay's caches evict by, ranked with the engine's retention hints) and names the path;
//! the caller writes the state there atomically (`prewarm_snapshot::restore` does: temporary
//! path, verify, rename); then [`StateSpace::commit`] records it. A [`Slot`] dropped without
//! commit frees its reservation. [`StateSpace::expire`] drops unleased states whose
//! keep-alive (from the hints) ran out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use prewarm_core::{ResourceId, Version};
use prewarm_engine::{CacheBook, Hint, Rule};
use serde::{Deserialize, Serialize};

const INDEX: &str = "index.json";
const STATES: &str = "states";
const TRASH: &str = "trash";

/// Distinguishes trash entries made by one process.
static TRASH_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Why the state space refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The index is not valid JSON of the expected shape.
    #[error("{path}: damaged index: {msg}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// The budget cannot hold the state even after evicting every unleased state.
    #[error(
        "cache full: {need} bytes needed, {free} free after evicting every unleased state ({leased} bytes leased, budget {budget})"
    )]
    Full {
        /// Bytes asked for.
        need: u64,
        /// Bytes that could be freed.
        free: u64,
        /// Bytes held by leased states.
        leased: u64,
        /// The budget.
        budget: u64,
    },
    /// That version is already installed (or being installed).
    #[error("{0} version {1} is already installed or being installed")]
    Exists(ResourceId, Version),
    /// An install an execution waits for took this background install's space.
    #[error("{0} version {1}: the install gave its space to one an execution waits for")]
    Preempted(ResourceId, Version),
    /// The caller committed a slot whose path holds nothing.
    #[error("{0}: nothing was installed at the slot's path")]
    NotInstalled(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpaceError + '_ {
    move |source| SpaceError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    bytes: u64,
    /// Last use, Unix seconds.
    #[serde(default)]
    last_use: Option<f64>,
    /// Index files before version 2: a logical clock (larger = more recent).
    #[serde(default, skip_serializing)]
    used: Option<u64>,
}

impl Entry {
    fn last_use(&self) -> f64 {
        // An old logical clock keeps its order as (very old) times.
        self.last_use
            .unwrap_or_else(|| self.used.unwrap_or(0) as f64 * 1e-9)
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    /// Index files before version 2 kept a logical clock here: read and ignored.
    #[serde(default, rename = "clock", skip_serializing)]
    _clock: u64,
    states: Vec<(ResourceId, Version, Entry)>,
}

/// A held state, as the application sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The resource.
    pub resource: ResourceId,
    /// Its version.
    pub version: Version,
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

/// While alive, the state cannot be evicted.
#[derive(Debug)]
pub struct Lease(Arc<AtomicUsize>);

#[cfg(test)]
impl Lease {
    /// A lease on a bare counter the caller already incremented.
    pub(crate) fn counted(c: Arc<AtomicUsize>) -> Self {
        Lease(c)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One install's claim on the budget, shared by its [`Slot`] and the space's list of installs
/// in progress.
#[derive(Debug, Default)]
struct Reservation {
    /// Committed or abandoned: the bytes are no longer reserved.
    released: AtomicBool,
    /// Taken back by an install an execution waits for, which needed the space.
    preempted: AtomicBool,
    /// Wakes the install (one waiter: the task writing the state) once preempted.
    wake: tokio::sync::Notify,
    /// Leases on the held states the install copies chunks from (delta sources): they go
    /// with the reservation, so that preempting the install frees those states at once.
    sources: std::sync::Mutex<Vec<(Key, Lease)>>,
}

impl Reservation {
    fn active(&self) -> bool {
        !self.released.load(Ordering::Acquire) && !self.preempted.load(Ordering::Acquire)
    }

    /// Lets go of the leases on the install's delta sources.
    fn release_sources(&self) {
        self.sources.lock().expect("sources lock poisoned").clear();
    }
}

/// An install in progress.
#[derive(Debug)]
struct Pending {
    key: Key,
    bytes: u64,
    /// An execution waits for it (set by the caller, possibly after `begin`): it is never
    /// preempted, and it may preempt the others.
    urgent: Arc<AtomicBool>,
    reservation: Arc<Reservation>,
}

/// A reservation for one state being installed.
#[derive(Debug)]
pub struct Slot {
    resource: ResourceId,
    version: Version,
    bytes: u64,
    path: PathBuf,
    reservation: Arc<Reservation>,
    done: bool,
}

impl Slot {
    /// Where the state must be written (atomically: it must not exist until complete).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an install an execution waits for took this reservation's bytes: the install
    /// must stop ([`StateSpace::commit`] refuses it).
    pub fn is_preempted(&self) -> bool {
        self.reservation.preempted.load(Ordering::Acquire)
    }

    /// Resolves once the reservation is preempted (never, if it is not).
    pub async fn preempted(&self) {
        while !self.is_preempted() {
            self.reservation.wake.notified().await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.done {
            // An abandoned install: nothing partial may stay visible.
            let _ =
                std::fs::remove_dir_all(&self.path).or_else(|_| std::fs::remove_file(&self.path));
            self.reservation.released.store(true, Ordering::Release);
            self.reservation.release_sources();
        }
    }
}

type Key = (ResourceId, Version);

/// The states one capacity holds, within a byte budget.
pub struct StateSpace {
    dir: PathBuf,
    budget: u64,
    states: BTreeMap<Key, (Entry, Arc<AtomicUsize>)>,
    /// The eviction rule's view (uses, hints). Hints are not persisted: the engine sends
    /// them again as executions report back.
    book: CacheBook<Key>,
    /// Installs in progress.
    pending: Vec<Pending>,
    /// States evicted since the last [`StateSpace::take_evicted`].
    evicted: Vec<Key>,
    /// Hints for states not held yet (on their way): applied when they are installed.
    early_hints: std::collections::HashMap<ResourceId, Hint>,
}

/// Hints kept for states not held yet.
const EARLY_HINTS: usize = 4096;

impl StateSpace {
    /// Opens (or creates) the state space in `dir` with a budget of `budget` bytes, evicting
    /// by `rule`.
    pub fn open(dir: &Path, budget: u64, rule: Rule) -> Result<Self, SpaceError> {
        let states_dir = dir.join(STATES);
        std::fs::create_dir_all(&states_dir).map_err(io(&states_dir))?;
        let ipath = dir.join(INDEX);
        let index: IndexFile = match std::fs::read(&ipath) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| SpaceError::Index {
                path: ipath.clone(),
                msg: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => IndexFile::default(),
            Err(e) => return Err(io(&ipath)(e)),
        };
        let mut space = Self {
            dir: dir.to_owned(),
            budget,
            states: BTreeMap::new(),
            book: CacheBook::new(rule, budget),
            pending: Vec::new(),
            evicted: Vec::new(),
            early_hints: std::collections::HashMap::new(),
        };
        let mut states = index.states;
        states.sort_by(|a, b| a.2.last_use().total_cmp(&b.2.last_use()));
        for (r, v, e) in states {
            // Forget states that are gone from disk.
            if std::fs::symlink_metadata(space.path_of(&r, v)).is_ok() {
                space.book.admit((r.clone(), v), e.bytes, e.last_use());
                space.states.insert((r, v), (e, Arc::default()));
            }
        }
        space.remove_strays(&states_dir)?;
        space.save()?;
        space.purge_trash();
        Ok(space)
    }

    /// Removes entries under `states/` that the index does not know (interrupted installs,
    /// restore's temporary paths).
    fn remove_strays(&self, states_dir: &Path) -> Result<(), SpaceError> {
        let known: std::collections::HashSet<PathBuf> = self
            .states
            .keys()
            .map(|(r, v)| self.path_of(r, *v))
            .collect();
        let mut stack = vec![states_dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).map_err(io(&d))? {
                let p = e.map_err(io(&d))?.path();
                if known.contains(&p) {
                    continue;
                }
                // A version directory is exactly `v<digits>`; restore's temporaries are
                // `.v<digits>.prewarm-tmp-…`. Anything else is a resource path segment.
                let is_version = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    let n = n
                        .strip_prefix('.')
                        .map_or(n, |t| t.split(".prewarm-tmp-").next().unwrap_or(t));
                    n.strip_prefix('v')
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                });
                if is_version {
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                } else if p.is_dir() && !p.is_symlink() {
                    stack.push(p);
                }
            }
        }
        Ok(())
    }

    fn path_of(&self, r: &ResourceId, v: Version) -> PathBuf {
        self.dir
            .join(STATES)
            .join(r.as_str())
            .join(format!("v{}", v.get()))
    }

    fn save(&self) -> Result<(), SpaceError> {
        let index = IndexFile {
            _clock: 0,
            states: self
                .states
                .iter()
                .map(|((r, v), (e, _))| (r.clone(), *v, e.clone()))
                .collect(),
        };
        let path = self.dir.join(INDEX);
        let tmp = self.dir.join(format!(".{INDEX}.tmp"));
        let json = serde_json::to_vec(&index).map_err(|e| SpaceError::Index {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        std::fs::write(&tmp, json).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    fn held(&self, r: &ResourceId, v: Version, e: &Entry) -> Held {
        Held {
            resource: r.clone(),
            version: v,
            path: self.path_of(r, v),
            bytes: e.bytes,
        }
    }

    /// Bytes installed plus bytes reserved by installs in progress.
    pub fn used(&self) -> u64 {
        self.states.values().map(|(e, _)| e.bytes).sum::<u64>()
            + self
                .pending
                .iter()
                .filter(|p| p.reservation.active())
                .map(|p| p.bytes)
                .sum::<u64>()
    }

    /// The budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Every held state, oldest resource id first.
    pub fn inventory(&self) -> Vec<Held> {
        self.states
            .iter()
            .map(|((r, v), (e, _))| self.held(r, *v, e))
            .collect()
    }

    /// The newest held version of `resource` that is at least `min` (any when `None`), marked
    /// used at `now`, with a lease that keeps it from eviction while the caller uses it.
    pub fn get(
        &mut self,
        resource: &ResourceId,
        min: Option<Version>,
        now: f64,
    ) -> Option<(Held, Lease)> {
        let (key, _) = self
            .states
            .range((resource.clone(), Version::new(1)?)..)
            .take_while(|((r, _), _)| r == resource)
            .filter(|((_, v), _)| min.is_none_or(|m| *v >= m))
            .last()?;
        let key = key.clone();
        self.book.touch(&key, now);
        let (e, leases) = self.states.get_mut(&key)?;
        e.last_use = Some(e.last_use().max(now));
        leases.fetch_add(1, Ordering::AcqRel);
        let lease = Lease(leases.clone());
        let e = e.clone();
        Some((self.held(&key.0, key.1, &e), lease))
    }

    /// A lease on exactly `resource@version`, if held (not marked used: for internal reads
    /// such as delta reuse).
    pub fn lease(&self, resource: &ResourceId, version: Version) -> Option<Lease> {
        let (_, leases) = self.states.get(&(resource.clone(), version))?;
        leases.fetch_add(1, Ordering::AcqRel);
        Some(Lease(leases.clone()))
    }

    /// Leases `resource@version` (if held) for the install of `slot`, which copies chunks
    /// from it: the lease lasts while the install does, and ends at once if the install is
    /// preempted.
    pub fn lease_source(&self, slot: &Slot, resource: &ResourceId, version: Version) {
        if let Some(l) = self.lease(resource, version) {
            let key = (resource.clone(), version);
            let mut sources = slot
                .reservation
                .sources
                .lock()
                .expect("sources lock poisoned");
            sources.push((key, l));
        }
    }

    /// Whether `resource@version` is leased now.
    pub fn leased(&self, resource: &ResourceId, version: Version) -> bool {
        self.states
            .get(&(resource.clone(), version))
            .is_some_and(|(_, l)| l.load(Ordering::Acquire) > 0)
    }

    /// The engine's retention hint for the held versions of `resource`.
    pub fn hint(&mut self, resource: &ResourceId, hint: &Hint) {
        let keys: Vec<Key> = self
            .states
            .range((resource.clone(), Version::FIRST)..)
            .take_while(|((r, _), _)| r == resource)
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            if self.early_hints.len() >= EARLY_HINTS {
                self.early_hints.clear();
            }
            self.early_hints.insert(resource.clone(), hint.clone());
        }
        for k in keys {
            self.book.hint(&k, hint.clone());
        }
    }

    /// Switches the eviction rule (the coordinator's engine named another), keeping what is
    /// held and when it was used.
    pub fn set_rule(&mut self, rule: Rule) {
        if self.book.rule() == rule {
            return;
        }
        let mut book = CacheBook::new(rule, self.budget);
        let mut held: Vec<(&Key, &Entry)> = self.states.iter().map(|(k, (e, _))| (k, e)).collect();
        held.sort_by(|a, b| a.1.last_use().total_cmp(&b.1.last_use()));
        for (k, e) in held {
            book.admit(k.clone(), e.bytes, e.last_use());
        }
        self.book = book;
    }

    /// The eviction book's horizon, seconds.
    pub fn horizon(&self) -> Option<f64> {
        self.book.horizon()
    }

    /// The eviction rule.
    pub fn rule(&self) -> Rule {
        self.book.rule()
    }

    /// Drops the unleased states whose keep-alive ran out by `now`; returns them.
    pub fn expire(&mut self, now: f64) -> Result<Vec<Key>, SpaceError> {
        let gone = {
            let states = &self.states;
            self.book.expired(now, &|k| {
                states
                    .get(k)
                    .is_some_and(|(_, l)| l.load(Ordering::Acquire) == 0)
            })
        };
        if gone.is_empty() {
            return Ok(gone);
        }
        for k in &gone {
            self.discard(&self.path_of(&k.0, k.1))?;
            self.states.remove(k);
            self.book.remove(k);
        }
        self.save()?;
        self.purge_trash();
        Ok(gone)
    }

    /// States evicted since the last call (their owners forget them too).
    pub fn take_evicted(&mut self) -> Vec<(ResourceId, Version)> {
        std::mem::take(&mut self.evicted)
    }

    /// Drops a held state that turned out unusable (deletes it) unless it is leased.
    pub fn remove(&mut self, resource: &ResourceId, version: Version) -> Result<bool, SpaceError> {
        let key = (resource.clone(), version);
        match self.states.get(&key) {
            Some((_, l)) if l.load(Ordering::Acquire) == 0 => {}
            _ => return Ok(false),
        }
        self.discard(&self.path_of(resource, version))?;
        self.states.remove(&key);
        self.book.remove(&key);
        self.save()?;
        self.purge_trash();
        Ok(true)
    }

    /// Hands the held, unleased `resource@version` over to an install of a newer version
    /// of it: its path is renamed to `to` (the newer version's staging path, which the
    /// installer patches in place, verifying every chunk it keeps) and it leaves the index.
    /// False (nothing changed) when it is not held or is leased: an application reading it
    /// keeps it, and the install copies from it instead.
    pub fn adopt(
        &mut self,
        resource: &ResourceId,
        version: Version,
        to: &Path,
    ) -> Result<bool, SpaceError> {
        let key = (resource.clone(), version);
        match self.states.get(&key) {
            Some((_, l)) if l.load(Ordering::Acquire) == 0 => {}
            _ => return Ok(false),
        }
        let from = self.path_of(resource, version);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // Renamed first: a crash before the index is saved leaves an entry whose tree is
        // gone, which the open-time check drops; the staged copy is verified when resumed.
        std::fs::rename(&from, to).map_err(io(&from))?;
        self.states.remove(&key);
        self.book.remove(&key);
        self.save()?;
        Ok(true)
    }

    /// Reserves `bytes` for `resource` version `version` at `now`, evicting unleased states
    /// by the rule if needed; the caller writes the state at the slot's path. A background
    /// install: it never preempts another (see [`StateSpace::begin_with`]).
    pub fn begin(
        &mut self,
        resource: &ResourceId,
        version: Version,
        bytes: u64,
        now: f64,
    ) -> Result<Slot, SpaceError> {
        self.begin_with(resource, version, bytes, now, Arc::default())
    }

    /// [`StateSpace::begin`] for an install that is `urgent` (an execution waits for it; the
    /// flag may be raised later, by a waiter joining a background install): when evicting
    /// every unleased state is not enough, it takes the space of background installs in
    /// progress (largest first; they stop, see [`Slot::preempted`]). An on-demand load never
    /// loses to a predictive one.
    pub fn begin_with(
        &mut self,
        resource: &ResourceId,
        version: Version,
        bytes: u64,
        now: f64,
        urgent: Arc<AtomicBool>,
    ) -> Result<Slot, SpaceError> {
        self.pending.retain(|p| p.reservation.active());
        let key = (resource.clone(), version);
        if self.states.contains_key(&key) || self.pending.iter().any(|p| p.key == key) {
            return Err(SpaceError::Exists(key.0, key.1));
        }
        let used = self.used();
        if used + bytes > self.budget {
            let need = used + bytes - self.budget;
            if urgent.load(Ordering::Acquire) {
                self.make_room_urgently(need, bytes, now)?;
            } else {
                self.evict(need, bytes, now)?;
            }
        }
        let reservation = Arc::new(Reservation::default());
        self.pending.push(Pending {
            key,
            bytes,
            urgent,
            reservation: reservation.clone(),
        });
        let path = self.path_of(resource, version);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        Ok(Slot {
            resource: resource.clone(),
            version,
            bytes,
            path,
            reservation,
            done: false,
        })
    }

    /// Frees `need` bytes for an urgent install of `asked` bytes: by eviction, and when that
    /// cannot free enough, by preempting background installs for the rest (the smallest one
    /// that covers it, else the largest and again), only when the two together can free
    /// enough: otherwise nothing is evicted or preempted.
    fn make_room_urgently(&mut self, need: u64, asked: u64, now: f64) -> Result<(), SpaceError> {
        let full = match self.evict(need, asked, now) {
            Err(full @ SpaceError::Full { .. }) => full,
            other => return other,
        };
        let SpaceError::Full { free, .. } = full else {
            unreachable!("matched above")
        };
        let mut background: Vec<&Pending> = self
            .pending
            .iter()
            .filter(|p| p.reservation.active() && !p.urgent.load(Ordering::Acquire))
            .collect();
        if free + background.iter().map(|p| p.bytes).sum::<u64>() < asked {
            return match self.preempt_all_background(asked, now)? {
                true => Ok(()),
                false => Err(full),
            };
        }
        background.sort_by_key(|p| p.bytes);
        let mut shortfall = asked - free;
        while shortfall > 0 {
            let i = background
                .iter()
                .position(|p| p.bytes >= shortfall)
                .unwrap_or(background.len() - 1);
            let victim = background.remove(i);
            tracing::info!(
                "preempting the background install of {}@{} ({} B) for an install an execution waits for",
                victim.key.0,
                victim.key.1,
                victim.bytes
            );
            victim.reservation.preempted.store(true, Ordering::Release);
            victim.reservation.wake.notify_one();
            shortfall = shortfall.saturating_sub(victim.bytes);
        }
        let used = self.used();
        match (used + asked).checked_sub(self.budget) {
            Some(rest) if rest > 0 => self.evict(rest, asked, now),
            _ => Ok(()),
        }
    }

    /// An urgent install's last resort: every background install preempted at once, and the
    /// leases they hold on their delta sources let go, when what that frees — their
    /// reservations and the states only those leases kept — makes room for `asked` bytes
    /// (then evicted by the rule). False, with nothing preempted, when it does not.
    fn preempt_all_background(&mut self, asked: u64, now: f64) -> Result<bool, SpaceError> {
        let background: Vec<&Pending> = self
            .pending
            .iter()
            .filter(|p| p.reservation.active() && !p.urgent.load(Ordering::Acquire))
            .collect();
        let mut pins: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
        for p in &background {
            let sources = p.reservation.sources.lock().expect("sources lock poisoned");
            for (k, _) in sources.iter() {
                *pins.entry(k.clone()).or_default() += 1;
            }
        }
        if pins.is_empty() {
            return Ok(false);
        }
        let reserved: u64 = background.iter().map(|p| p.bytes).sum();
        let need = (self.used() - reserved + asked).saturating_sub(self.budget);
        let states = &self.states;
        let only_pinned = |k: &Key| {
            states.get(k).is_some_and(|(_, l)| {
                l.load(Ordering::Acquire) <= pins.get(k).copied().unwrap_or(0)
            })
        };
        if self.book.peek_victims(need, now, &only_pinned).is_err() {
            return Ok(false);
        }
        for p in background {
            tracing::info!(
                "preempting the background install of {}@{} ({} B, copying from held states) for an install an execution waits for",
                p.key.0,
                p.key.1,
                p.bytes
            );
            p.reservation.preempted.store(true, Ordering::Release);
            p.reservation.release_sources();
            p.reservation.wake.notify_one();
        }
        self.evict(need, asked, now)?;
        Ok(true)
    }

    /// Frees `need` bytes of the disk itself (the budget may promise more than the disk
    /// holds): evicts unleased states by the rule and deletes them before returning (not in
    /// the background), so the bytes are free when it returns. Frees nothing when that is
    /// impossible ([`SpaceError::Full`]).
    /// The victims are deleted before the index is saved: on a full disk the index cannot
    /// be rewritten until they are gone (a state whose tree is gone while the index still
    /// lists it is dropped at open).
    pub fn relieve_disk(&mut self, need: u64, now: f64) -> Result<(), SpaceError> {
        self.take_out(need, need, now)?;
        for p in self.trash() {
            remove_tree(&p);
        }
        self.save()
    }

    /// Evicts unleased states by the rule until `need` bytes are freed; frees nothing when
    /// that is impossible.
    fn evict(&mut self, need: u64, asked: u64, now: f64) -> Result<(), SpaceError> {
        self.take_out(need, asked, now)?;
        self.save()?;
        self.purge_trash();
        Ok(())
    }

    /// [`StateSpace::evict`]'s first stage: the victims leave `states/` (into `trash/`) and
    /// the books; the index is not saved yet.
    fn take_out(&mut self, need: u64, asked: u64, now: f64) -> Result<(), SpaceError> {
        let victims = {
            let states = &self.states;
            self.book.victims(need, now, &|k| {
                states
                    .get(k)
                    .is_some_and(|(_, l)| l.load(Ordering::Acquire) == 0)
            })
        };
        let victims = victims.map_err(|s| SpaceError::Full {
            need: asked,
            free: self.budget.saturating_sub(self.used()) + s.freeable,
            leased: s.leased,
            budget: self.budget,
        })?;
        for key in victims {
            self.discard(&self.path_of(&key.0, key.1))?;
            self.states.remove(&key);
            self.book.remove(&key);
            self.evicted.push(key);
        }
        Ok(())
    }

    /// Takes a state's path out of `states/` in one `rename` (into `trash/`), so no reader
    /// and no restarted agent ever sees it half deleted. A path already gone is fine.
    fn discard(&self, path: &Path) -> Result<(), SpaceError> {
        let trash = self.dir.join(TRASH);
        std::fs::create_dir_all(&trash).map_err(io(&trash))?;
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            prewarm_core::Clock::system().now_ms(),
            TRASH_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        match std::fs::rename(path, trash.join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Deletes what `trash/` holds, on a background thread (a large tree takes a while and
    /// nothing waits for it: its bytes left the budget when it was discarded).
    fn purge_trash(&self) {
        let paths = self.trash();
        if paths.is_empty() {
            return;
        }
        std::thread::spawn(move || {
            for p in paths {
                remove_tree(&p);
            }
        });
    }

    /// What `trash/` holds.
    fn trash(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join(TRASH))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Records a completed install at `now`.
    pub fn commit(&mut self, mut slot: Slot, now: f64) -> Result<Held, SpaceError> {
        if std::fs::symlink_metadata(&slot.path).is_err() {
            return Err(SpaceError::NotInstalled(slot.path.clone()));
        }
        if slot.is_preempted() {
            return Err(SpaceError::Preempted(slot.resource.clone(), slot.version));
        }
        let e = Entry {
            bytes: slot.bytes,
            last_use: Some(now),
            used: None,
        };
        let key = (slot.resource.clone(), slot.version);
        self.book.admit(key.clone(), e.bytes, now);
        if let Some(h) = self.early_hints.remove(&key.0) {
            self.book.hint(&key, h);
        }
        self.states.insert(key.clone(), (e.clone(), Arc::default()));
        slot.done = true;
        slot.reservation.released.store(true, Ordering::Release);
        slot.reservation.release_sources();
        self.pending.retain(|p| p.reservation.active());
        self.save()?;
        Ok(self.held(&key.0, key.1, &e))
    }
}

/// Deletes a file or a tree, making directories writable first (a state's directories keep
/// the modes of its snapshot, which may forbid removing their entries). Errors are ignored:
/// what stays is retried at the next purge.
fn remove_tree(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o700 != 0o700 {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            }
            if std::fs::remove_dir_all(p).is_ok() {
                return;
            }
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    remove_tree(&e.path());
                }
            }
            let _ = std::fs::remove_dir(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A test clock: every call is one second later.
    fn tick() -> f64 {
        static T: AtomicU64 = AtomicU64::new(1_000);
        T.fetch_add(1, Ordering::Relaxed) as f64
    }

    fn id(s: &str) -> ResourceId {
        ResourceId::new(s).unwrap()
    }

    fn v(n: u64) -> Version {
        Version::new(n).unwrap()
    }

    fn install(s: &mut StateSpace, r: &str, ver: u64, bytes: u64) -> Result<Held, SpaceError> {
        let slot = s.begin(&id(r), v(ver), bytes, tick())?;
        std::fs::write(slot.path(), vec![7u8; bytes as usize]).unwrap();
        s.commit(slot, tick())
    }

    #[test]
    fn installs_serves_newest_recent_enough_and_survives_restart() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateSpace::open(d.path(), 1000, Rule::Lru).unwrap();
        install(&mut s, "m/a", 1, 100).unwrap();
        install(&mut s, "m/a", 3, 100).unwrap();
        let (h, _l) = s.get(&id("m/a"), None, tick()).unwrap();
        assert_eq!(h.version, v(3));
        assert!(h.path.ends_with("states/m/a/v3"));
        assert!(s.get(&id("m/a"), Some(v(4)), tick()).is_none());
        assert_eq!(
            s.get(&id("m/a"), Some(v(2)), tick()).unwrap().0.version,
            v(3)
        );
        assert!(s.get(&id("m/b"), None, tick()).is_none());
        assert!(matches!(
            install(&mut s, "m/a", 3, 1),
            Err(SpaceError::Exists(..))
        ));
        drop(s);
        let mut s = StateSpace::open(d.path(), 1000, Rule::Lru).unwrap();
        assert_eq!(s.inventory().len(), 2);
        assert_eq!(s.used(), 200);
        assert!(s.get(&id("m/a"), Some(v(3)), tick()).is_some());
    }

    #[test]
    fn evicts_least_recently_used_but_never_a_leased_state() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateSpace::open(d.path(), 300, Rule::Lru).unwrap();
        install(&mut s, "a", 1, 100).unwrap();
        install(&mut s, "b", 1, 100).unwrap();
        install(&mut s, "c", 1, 100).unwrap();
        let (_, lease_a) = s.get(&id("a"), None, tick()).unwrap(); // a: most recent and leased
        install(&mut s, "d", 1, 100).unwrap(); // evicts b, the least recently used
        let names: Vec<String> = s
            .inventory()
            .iter()
            .map(|h| h.resource.to_string())
            .collect();
        assert_eq!(names, ["a", "c", "d"]);
        assert!(!d.path().join("states/b/v1").exists());
        // 300 bytes would need a gone too, and a is leased: refused.
        let err = s.begin(&id("e"), v(1), 300, tick()).unwrap_err();
        assert!(matches!(err, SpaceError::Full { leased: 100, .. }), "{err}");
        assert_eq!(
            s.inventory().len(),
            3,
            "a refused reservation evicts nothing"
        );
        drop(lease_a);
        install(&mut s, "e", 1, 300).unwrap();
        let names: Vec<String> = s
            .inventory()
            .iter()
            .map(|h| h.resource.to_string())
            .collect();
        assert_eq!(names, ["e"]);
    }

    #[test]
    fn hints_expire_unleased_states_past_their_keep_alive() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateSpace::open(d.path(), 300, Rule::Lru).unwrap();
        install(&mut s, "a", 1, 100).unwrap();
        install(&mut s, "b", 1, 100).unwrap();
        install(&mut s, "c", 1, 100).unwrap();
        let hint = |keep_until: f64| Hint {
            keep_until,
            fetch_s: 1.0,
            share: 1.0,
            curve: None,
            expected: None,
            next_at: None,
        };
        let now = tick();
        s.hint(&id("a"), &hint(now + 60.0));
        s.hint(&id("b"), &hint(now - 1.0));
        s.hint(&id("c"), &hint(now - 1.0));
        let (_, lease_c) = s.get(&id("c"), None, now).unwrap();
        let gone = s.expire(now).unwrap();
        assert_eq!(gone, vec![(id("b"), v(1))], "c is leased, a still kept");
        assert!(!d.path().join("states/b/v1").exists());
        drop(lease_c);
        assert_eq!(s.expire(now).unwrap(), vec![(id("c"), v(1))]);
        assert_eq!(s.expire(now + 61.0).unwrap(), vec![(id("a"), v(1))]);
        assert!(s.inventory().is_empty());
    }

    #[test]
    fn eviction_takes_a_state_out_whole_and_leftover_trash_is_purged_at_open() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateSpace::open(d.path(), 200, Rule::Lru).unwrap();
        let slot = s.begin(&id("tree"), v(1), 100, tick()).unwrap();
        std::fs::create_dir_all(slot.path().join("a/b")).unwrap();
        std::fs::write(slot.path().join("a/b/f"), vec![1u8; 100]).unwrap();
        s.commit(slot, tick()).unwrap();
        install(&mut s, "x", 1, 100).unwrap();
        install(&mut s, "y", 1, 100).unwrap(); // evicts the tree
        assert!(!d.path().join("states/tree/v1").exists());
        assert!(s.get(&id("tree"), None, tick()).is_none());
        // A crash mid-deletion leaves part of a tree in trash/: never served, purged at open.
        drop(s);
        std::fs::create_dir_all(d.path().join("trash/1-2-3/a")).unwrap();
        std::fs::write(d.path().join("trash/1-2-3/a/f"), b"x").unwrap();
        let s = StateSpace::open(d.path(), 200, Rule::Lru).unwrap();
        assert_eq!(s.inventory().len(), 2);
        let t0 = std::time::Instant::now();
        while std::fs::read_dir(d.path().join(TRASH))
            .unwrap()
            .next()
            .is_some()
        {
            assert!(t0.elapsed().as_secs() < 10, "trash not purged");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn abandoned_installs_leave_nothing_and_free_their_reservation() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateSpace::open(d.path(), 100, Rule::Lru).unwrap();
        let slot = s.begin(&id("x"), v(1), 100, tick()).unwrap();
        std::fs::write(slot.path(), b"partial").unwrap();
        assert!(matches!(
            s.begin(&id("y"), v(1), 1, tick()),
            Err(SpaceError::Full { .. })
        ));
        drop(slot);
        assert!(!d.path().join("states/x/v1").exists());
        assert_eq!(s.used(), 0);
        // Committing a slot with nothing written is refused.
        let slot = s.begin(&id("y"), v(1), 10, tick()).unwrap();
        assert!(matches!(
            s.commit(slot, tick()),
            Err(SpaceError::NotInstalled(_))
        ));
        assert!(s.inventory().is_empty());
    }

    #[test]
    fn reopening_forgets_vanished_states_and_removes_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateSpace::open(d.path(), 1000, Rule::Lru).unwrap();
        install(&mut s, "a", 1, 10).unwrap();
        install(&mut s, "b", 2, 10).unwrap();
        drop(s);
        std::fs::remove_file(d.path().join("states/a/v1")).unwrap();
        // A crash mid-install: a restore temporary and an unindexed version directory.
        std::fs::create_dir_all(d.path().join("states/c/.v1.prewarm-tmp-9-123")).unwrap();
        std::fs::create_dir_all(d.path().join("states/c/v1")).unwrap();
        // A resource whose name looks like a version prefix is not touched while held.
        let mut s = StateSpace::open(d.path(), 1000, Rule::Lru).unwrap();
        install(&mut s, "videos/v", 1, 10).unwrap();
        drop(s);
        let s = StateSpace::open(d.path(), 1000, Rule::Lru).unwrap();
        let names: Vec<String> = s
            .inventory()
            .iter()
            .map(|h| h.resource.to_string())
            .collect();
        assert_eq!(names, ["b", "videos/v"]);
        assert!(d.path().join("states/videos/v/v1").exists());
        assert!(!d.path().join("states/c/v1").exists());
        assert!(!d.path().join("states/c/.v1.prewarm-tmp-9-123").exists());
        std::fs::write(d.path().join(INDEX), b"{not json").unwrap();
        let err = StateSpace::open(d.path(), 1000, Rule::Lru).err().unwrap();
        assert!(err.to_string().contains("damaged index"), "{err}");
    }

    #[test]
    fn an_urgent_install_preempts_background_ones_only_when_that_makes_room() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateSpace::open(d.path(), 300, Rule::Lru).unwrap();
        install(&mut s, "held", 1, 100).unwrap();
        let (_, lease) = s.get(&id("held"), None, tick()).unwrap();
        let bg_small = s.begin(&id("bg/small"), v(1), 50, tick()).unwrap();
        let bg_large = s.begin(&id("bg/large"), v(1), 150, tick()).unwrap();
        assert_eq!(s.used(), 300);
        // A background install never preempts: refused, nothing touched.
        assert!(matches!(
            s.begin(&id("other"), v(1), 100, tick()),
            Err(SpaceError::Full { .. })
        ));
        // Too large even after preempting both (the held state is leased): nothing preempted.
        let urgent = || Arc::new(AtomicBool::new(true));
        assert!(matches!(
            s.begin_with(&id("huge"), v(1), 250, tick(), urgent()),
            Err(SpaceError::Full { .. })
        ));
        assert!(!bg_small.is_preempted() && !bg_large.is_preempted());
        // 120 bytes: the largest background install gives way, the smaller one goes on.
        let mine = s
            .begin_with(&id("now"), v(1), 120, tick(), urgent())
            .unwrap();
        assert!(bg_large.is_preempted() && !bg_small.is_preempted());
        assert_eq!(s.used(), 270);
        // An urgent install (or one a waiter boosted later) is never preempted.
        let boosted = Arc::new(AtomicBool::new(false));
        let joined = s
            .begin_with(&id("joined"), v(1), 30, tick(), boosted.clone())
            .unwrap();
        boosted.store(true, Ordering::Release);
        drop(lease);
        let _also = s
            .begin_with(&id("late"), v(1), 150, tick(), urgent())
            .unwrap();
        assert!(bg_small.is_preempted(), "the background install gave way");
        assert!(!mine.is_preempted() && !joined.is_preempted());
        assert!(
            s.get(&id("held"), None, tick()).is_none(),
            "and the unleased state went"
        );
        assert!(s.used() <= 300, "{}", s.used());
        // A preempted install cannot be committed; nothing of it stays.
        std::fs::write(bg_large.path(), b"x").unwrap();
        let path = bg_large.path().to_owned();
        assert!(matches!(
            s.commit(bg_large, tick()),
            Err(SpaceError::Preempted(..))
        ));
        assert!(!path.exists());
        // Wakes the install waiting on it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(bg_small.preempted());
    }

    #[test]
    fn an_urgent_install_frees_the_states_a_background_install_copies_from() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateSpace::open(d.path(), 300, Rule::Lru).unwrap();
        install(&mut s, "m/a", 1, 150).unwrap();
        // A background refresh of m/a copies from v1 (leased by its reservation).
        let refresh = s.begin(&id("m/a"), v(2), 100, tick()).unwrap();
        s.lease_source(&refresh, &id("m/a"), v(1));
        assert!(s.leased(&id("m/a"), v(1)));
        let urgent = || Arc::new(AtomicBool::new(true));
        // While an execution leases v1 too, preempting the refresh cannot free it: refused,
        // nothing preempted.
        let (_, execution) = s.get(&id("m/a"), Some(v(1)), tick()).unwrap();
        assert!(matches!(
            s.begin_with(&id("m/b"), v(1), 250, tick(), urgent()),
            Err(SpaceError::Full { .. })
        ));
        assert!(!refresh.is_preempted());
        drop(execution);
        // Only the refresh holds v1: it gives way, its lease goes with it, v1 is evicted.
        let mine = s
            .begin_with(&id("m/b"), v(1), 250, tick(), urgent())
            .unwrap();
        assert!(refresh.is_preempted());
        assert!(s.get(&id("m/a"), None, tick()).is_none(), "v1 was evicted");
        assert_eq!(s.used(), 250);
        drop((mine, refresh));
    }
}

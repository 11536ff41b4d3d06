//! A fault-injecting `ObjectStore` wrapper (in the spirit of neon's `UnreliableWrapper`),
//! put under the coordinator's real `Store`: reads of packs fail, come back with a flipped
//! bit, or come back short; manifest reads fail or come back damaged; version listings fail.
//! Each decision is a hash of the seed, the object, the range and how many times that range
//! was read before, so it does not depend on thread timing and a retry draws anew. Writes,
//! the store's marker and its index objects pass through untouched (the coordinator must be
//! able to start). A gate can freeze pack reads after a given number of them, which is how
//! the harness lands a crash or a new version in the middle of a transfer.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tokio::sync::watch;

use crate::rng::{hash_str, mix};

/// What one read is made to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    Error,
    Corrupt,
    Truncate,
}

/// The gate on pack reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Reads pass.
    Open,
    /// This many more reads pass, then reads are held.
    Armed(u32),
    /// Reads wait until the gate opens.
    Holding,
}

/// Counts of what was injected.
#[derive(Debug, Default)]
pub struct Injected {
    /// Reads answered with an error.
    pub errors: AtomicU64,
    /// Reads answered with a flipped bit.
    pub corrupted: AtomicU64,
    /// Reads answered short.
    pub truncated: AtomicU64,
}

/// The faults of one run, shared by the wrapper and the harness.
pub struct Faults {
    seed: u64,
    /// Probability of a fault per read, per mille (split among the kinds).
    per_mille: AtomicU32,
    attempts: Mutex<HashMap<String, u64>>,
    gate: watch::Sender<Gate>,
    /// What was injected so far.
    pub injected: Injected,
}

impl Faults {
    /// No faults until [`Faults::set_rate`].
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            per_mille: AtomicU32::new(0),
            attempts: Mutex::default(),
            gate: watch::channel(Gate::Open).0,
            injected: Injected::default(),
        }
    }

    /// Faults per thousand reads from now on.
    pub fn set_rate(&self, per_mille: u32) {
        self.per_mille.store(per_mille, Ordering::Relaxed);
    }

    /// Lets `pass` more pack reads through, then holds every pack read until [`Faults::open`].
    pub fn arm(&self, pass: u32) {
        self.gate.send_replace(Gate::Armed(pass));
    }

    /// Whether a read is held at the gate now.
    pub fn holding(&self) -> bool {
        *self.gate.borrow() == Gate::Holding
    }

    /// Opens the gate: held reads go on.
    pub fn open(&self) {
        self.gate.send_replace(Gate::Open);
    }

    /// Holds this read while the gate says so.
    async fn pass_gate(&self) {
        let mut hold = false;
        self.gate.send_if_modified(|g| match g {
            Gate::Armed(0) => {
                *g = Gate::Holding;
                hold = true;
                true
            }
            Gate::Armed(n) => {
                *n -= 1;
                false
            }
            Gate::Holding => {
                hold = true;
                false
            }
            Gate::Open => false,
        });
        if hold {
            let mut rx = self.gate.subscribe();
            let _ = rx.wait_for(|g| *g != Gate::Holding).await;
        }
    }

    /// The fault for this read of `key` (its path and range), and the draw behind it.
    fn decide(&self, key: &str) -> (Fault, u64) {
        let n = {
            let mut a = self.attempts.lock().expect("attempts lock");
            let n = a.entry(key.to_owned()).or_default();
            *n += 1;
            *n
        };
        let draw = mix(mix(self.seed, hash_str(key)), n);
        let rate = u64::from(self.per_mille.load(Ordering::Relaxed));
        let fault = match draw % 1000 {
            d if d >= rate => Fault::None,
            d if d * 3 < rate => Fault::Error,
            d if d * 3 < rate * 2 => Fault::Corrupt,
            _ => Fault::Truncate,
        };
        let counter = match fault {
            Fault::None => None,
            Fault::Error => Some(&self.injected.errors),
            Fault::Corrupt => Some(&self.injected.corrupted),
            Fault::Truncate => Some(&self.injected.truncated),
        };
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
        (fault, draw >> 10)
    }
}

fn injected_error(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: format!("injected read error ({what})").into(),
    }
}

/// `b` with one bit flipped (chosen by `draw`), or cut to a part of its length.
fn damage(b: Bytes, fault: Fault, draw: u64) -> Bytes {
    if b.is_empty() {
        return b;
    }
    match fault {
        Fault::Corrupt => {
            let mut v = b.to_vec();
            let i = (draw % v.len() as u64) as usize;
            v[i] ^= 1 << (draw % 8);
            Bytes::from(v)
        }
        Fault::Truncate => b.slice(..(draw % b.len() as u64) as usize),
        Fault::None | Fault::Error => b,
    }
}

/// The wrapper.
pub struct Faulty<S> {
    inner: S,
    faults: std::sync::Arc<Faults>,
}

impl<S> Faulty<S> {
    /// `inner`, failing as `faults` says.
    pub fn new(inner: S, faults: std::sync::Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

impl<S: fmt::Display> fmt::Display for Faulty<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl<S: fmt::Debug> fmt::Debug for Faulty<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({:?})", self.inner)
    }
}

#[tonic::async_trait]
impl<S: ObjectStore> ObjectStore for Faulty<S> {
    async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }

    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }

    /// Manifests: an error, or a damaged body (its checksum must catch it).
    async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
        if !l.as_ref().starts_with("manifests/") {
            return self.inner.get_opts(l, o).await;
        }
        let (fault, draw) = self.faults.decide(l.as_ref());
        if fault == Fault::Error {
            return Err(injected_error(l.as_ref()));
        }
        let mut r = self.inner.get_opts(l, o).await?;
        if fault == Fault::None {
            return Ok(r);
        }
        let (meta, range, attributes) = (r.meta.clone(), r.range.clone(), r.attributes.clone());
        let extensions = std::mem::take(&mut r.extensions);
        let body = damage(r.bytes().await?, fault, draw);
        let range = range.start..range.start + body.len() as u64;
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(body) }).boxed()),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    /// Packs: held at the gate, then an error, a flipped bit or a short range.
    async fn get_ranges(&self, l: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if l.as_ref().starts_with("data/") {
            self.faults.pass_gate().await;
        }
        let mut got = self.inner.get_ranges(l, ranges).await?;
        if !l.as_ref().starts_with("data/") {
            return Ok(got);
        }
        for (b, r) in got.iter_mut().zip(ranges) {
            let (fault, draw) = self.faults.decide(&format!("{l}@{}", r.start));
            if fault == Fault::Error {
                return Err(injected_error(l.as_ref()));
            }
            *b = damage(std::mem::take(b), fault, draw);
        }
        Ok(got)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    /// Version listings fail now and then.
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        if let Some(p) = prefix.filter(|p| p.as_ref().starts_with("manifests/")) {
            let (fault, _) = self.faults.decide(&format!("list:{p}"));
            if fault != Fault::None {
                return Err(injected_error(p.as_ref()));
            }
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

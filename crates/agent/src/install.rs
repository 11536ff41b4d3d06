//! Installing one state version into a staging path: keep what an interrupted earlier
//! attempt already wrote (re-verified), copy chunks the capacity already holds in other
//! states (delta transfer, verified), fetch the rest over the data plane (pipelined, verified
//! on receipt, written at their place), re-fetch chunks that failed verification a few
//! times, then complete the tree. The caller renames the staging path into place: nothing
//! here is ever visible at a state's path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use prewarm_core::ChunkHash;
use prewarm_store::verify_stored;
use prewarm_store::{ChunkRef, Manifest};
use prewarm_transfer::{DataError, Pacer, Received};
use rayon::prelude::*;
use tokio::sync::mpsc;

use crate::direct::{ChunkFrom, DirectError};
use crate::layout::{self, Files, Layout};

/// Verified bytes to write at their stream offsets.
type Pieces = Vec<(u64, bytes::Bytes)>;

/// Chunks re-verified per read when resuming or patching in place (~300 KiB at the ~10 KiB
/// average chunk; 256 per read measured the same on a 1 GiB tree).
const VERIFY_SPAN: usize = 32;

/// Rounds of re-fetching chunks that failed verification before giving up.
pub const VERIFY_ATTEMPTS: u32 = 3;

/// Why an install failed. Nothing was installed; verified chunks stay in staging for a retry.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Writing the staging path failed.
    #[error("staging {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data plane failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Reading the object store directly failed.
    #[error(transparent)]
    Direct(#[from] DirectError),
    /// A chunk kept failing verification.
    #[error(
        "chunk {chunk} failed verification {attempts} times (last: {why}); nothing was installed"
    )]
    Verification {
        /// The chunk.
        chunk: ChunkHash,
        /// Fetches tried.
        attempts: u32,
        /// The last failure.
        why: String,
    },
}

/// Where a chunk can be copied from locally.
#[derive(Clone)]
pub struct LocalCopy {
    /// The installed state's layout.
    pub layout: Arc<Layout>,
    /// Offset of the chunk in that state's stream.
    pub offset: u64,
}

/// What an install moved.
#[derive(Clone, Copy, Debug, Default)]
pub struct InstallReport {
    /// Bytes received on the data plane (frames included).
    pub wire_bytes: u64,
    /// Stored bytes read directly from the object store (see [`crate::direct`]).
    pub store_bytes: u64,
    /// Raw bytes copied from states already held.
    pub reused_bytes: u64,
    /// Raw bytes kept from an interrupted attempt.
    pub resumed_bytes: u64,
    /// Of the reused bytes, those kept in place in an older version's files that were
    /// unchanged since verified, so not read again (see [`crate::trust`]).
    pub unread_bytes: u64,
    /// Raw bytes fetched over the network.
    pub fetched_bytes: u64,
    /// The state's size.
    pub state_bytes: u64,
    /// Time spent.
    pub micros: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_owned(),
        source,
    }
}

async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, InstallError> + Send + 'static,
) -> Result<T, InstallError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| InstallError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// Installs `m` at `staging` (see the module docs); `local` says where held chunks are.
/// `adopted`: staging is an older version's tree handed over to be patched in place (its
/// chunks found at their place count as reused, not resumed; those of its files unchanged
/// since they were verified are not read again).
pub async fn install(
    m: Arc<Manifest>,
    staging: &Path,
    local: HashMap<ChunkHash, LocalCopy>,
    from: &mut ChunkFrom<'_>,
    pacer: Option<&Pacer>,
    adopted: Option<crate::trust::Adopted>,
) -> Result<InstallReport, InstallError> {
    let patching = adopted.is_some();
    let t0 = Instant::now();
    let lay = Arc::new(Layout::new(&m, staging));
    let mut report = InstallReport {
        state_bytes: m.logical_size,
        ..Default::default()
    };
    // 1. Resume: which chunks does staging already hold, verified?
    let (have, unread) = resume(&m, &lay, staging, adopted).await?;
    report.unread_bytes = unread;
    let kept = bytes_where(&m.chunks, &have);
    if patching {
        report.reused_bytes = kept;
    } else {
        report.resumed_bytes = kept;
    }
    // 2. Delta: copy chunks held elsewhere on this capacity; what is left is fetched.
    let missing: Vec<usize> = (0..m.chunks.len()).filter(|i| !have[*i]).collect();
    let t_resume = t0.elapsed();
    let (reused, remote) = copy_local(&m, &lay, staging, missing, local).await?;
    report.reused_bytes += reused;
    let t_delta = t0.elapsed();
    // 3. Fetch the rest (each distinct chunk once), verify, write; re-fetch failures.
    fetch_remote(&m, &lay, staging, remote, from, pacer, &mut report).await?;
    let t_fetch = t0.elapsed();
    // 4. Complete the tree.
    let (m2, st) = (m.clone(), staging.to_owned());
    blocking(staging, move || {
        layout::finish(&m2, &st).map_err(io_err(&st))
    })
    .await?;
    report.micros = t0.elapsed().as_micros() as u64;
    tracing::debug!(
        "install {}: resume {:?}, held chunks copied {:?}, fetch {:?}, tree {:?}",
        m.state,
        t_resume,
        t_delta - t_resume,
        t_fetch - t_delta,
        t0.elapsed() - t_fetch
    );
    Ok(report)
}

/// Prepares staging and says, per chunk, whether an earlier attempt already wrote it
/// (re-verified; all false when staging did not exist).
async fn resume(
    m: &Arc<Manifest>,
    lay: &Arc<Layout>,
    staging: &Path,
    adopted: Option<crate::trust::Adopted>,
) -> Result<(Vec<bool>, u64), InstallError> {
    let (m2, lay2, st) = (m.clone(), lay.clone(), staging.to_owned());
    blocking(staging, move || {
        let existed = lay2.prepare(&m2).map_err(io_err(&st))?;
        if !existed {
            return Ok((vec![false; m2.chunks.len()], 0));
        }
        let known = match &adopted {
            Some(a) => a.in_place(&m2, &lay2),
            None => vec![false; m2.chunks.len()],
        };
        let unread = bytes_where(&m2.chunks, &known);
        let have = m2
            .chunks
            .par_chunks(VERIFY_SPAN)
            .zip(known.par_chunks(VERIFY_SPAN))
            .map_init(Vec::new, |buf, (part, known)| {
                if known.iter().all(|k| !*k) {
                    return staged_chunks(&lay2, part, buf);
                }
                // Known in place but for a few (an edit's): only those are read.
                let mut files = Files::new(&lay2, false);
                part.iter()
                    .zip(known)
                    .map(|(c, k)| *k || verify_one(&mut files, c))
                    .collect()
            })
            .flatten_iter()
            .collect();
        Ok((have, unread))
    })
    .await
}

/// The bytes of the chunks whose flag in `mask` is set.
fn bytes_where(chunks: &[ChunkRef], mask: &[bool]) -> u64 {
    chunks
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(c, _)| u64::from(c.length))
        .sum()
}

/// Whether each chunk of `part` (adjacent in the stream) is in staging and verifies: one read
/// of the whole span into `buf` (reused: fresh memory costs a page fault per page), then
/// each chunk hashed where it lies; chunk by chunk when the span cannot be read whole.
fn staged_chunks(lay: &Layout, part: &[ChunkRef], buf: &mut Vec<u8>) -> Vec<bool> {
    let mut files = Files::new(lay, false);
    let start = part.first().map_or(0, |c| c.offset);
    let end = part.last().map_or(0, |c| c.offset + u64::from(c.length));
    let adjacent = part
        .windows(2)
        .all(|w| w[0].offset + u64::from(w[0].length) == w[1].offset);
    if adjacent && end - start <= 64 << 20 {
        buf.resize((end - start) as usize, 0);
        if files.read_into(start, buf).is_ok() {
            return part
                .iter()
                .map(|c| {
                    let at = (c.offset - start) as usize;
                    ChunkHash::of(&buf[at..at + c.length as usize]) == c.hash
                })
                .collect();
        }
    }
    part.iter().map(|c| verify_one(&mut files, c)).collect()
}

/// Whether chunk `c` is in staging and verifies.
fn verify_one(files: &mut Files, c: &ChunkRef) -> bool {
    files
        .read_at(c.offset, c.length as usize)
        .is_ok_and(|b| ChunkHash::of(&b) == c.hash)
}

/// Copies the `missing` chunks held (and still verifying) in other states on this
/// capacity into staging: the bytes reused, and the chunk indexes left to fetch.
async fn copy_local(
    m: &Arc<Manifest>,
    lay: &Arc<Layout>,
    staging: &Path,
    missing: Vec<usize>,
    local: HashMap<ChunkHash, LocalCopy>,
) -> Result<(u64, Vec<usize>), InstallError> {
    let (m2, lay2, st) = (m.clone(), lay.clone(), staging.to_owned());
    blocking(staging, move || {
        // Slices of SLICE chunks on all cores: read and hash a slice (source files kept open
        // per worker), then write it while it is in cache, taking turns on the staging files.
        let out = std::sync::Mutex::new(Files::new(&lay2, true));
        let parts: Vec<Result<(u64, Vec<usize>), std::io::Error>> = missing
            .par_chunks(SLICE)
            .map_init(Held::default, |held, part| {
                let (pieces, rest) = held.read(&m2, &local, part);
                let reused = pieces.iter().map(|(_, b)| b.len() as u64).sum();
                out.lock()
                    .expect("staging lock poisoned")
                    .write_pieces(pieces)?;
                held.recycle();
                Ok((reused, rest))
            })
            .collect();
        let mut reused = 0;
        let mut remote = Vec::new();
        for p in parts {
            let (r, mut rest) = p.map_err(io_err(&st))?;
            reused += r;
            remote.append(&mut rest);
        }
        Ok((reused, remote))
    })
    .await
}

/// One delta worker's reading side: the held states' files it keeps open, and read buffers
/// to reuse once their bytes are written (fresh memory costs a page fault per page here).
#[derive(Default)]
struct Held<'a> {
    sources: HashMap<*const Layout, Files<'a>>,
    /// Buffers handed out as pieces, recovered by [`Held::recycle`] once written.
    lent: Vec<bytes::Bytes>,
    spare: Vec<bytes::BytesMut>,
}

/// A span of held bytes: its source, its start there, its length, and its chunks.
type Span<'a> = (&'a LocalCopy, u64, u64, Vec<usize>);

impl<'a> Held<'a> {
    /// Reads the chunks `part` (indexes into `m`'s chunks) from the states on this capacity
    /// that hold them, keeping what still verifies: (the pieces to write, the indexes left
    /// to fetch). Chunks lying back to back in one held state are read with one read.
    fn read(
        &mut self,
        m: &Manifest,
        local: &'a HashMap<ChunkHash, LocalCopy>,
        part: &[usize],
    ) -> (Pieces, Vec<usize>) {
        let mut pieces = Vec::new();
        let mut rest = Vec::new();
        let mut span: Option<Span<'a>> = None;
        for &i in part {
            let c = &m.chunks[i];
            let Some(src) = local.get(&c.hash) else {
                rest.push(i);
                continue;
            };
            if let Some((s, start, len, members)) = &mut span
                && Arc::ptr_eq(&s.layout, &src.layout)
                && *start + *len == src.offset
            {
                *len += u64::from(c.length);
                members.push(i);
                continue;
            }
            if let Some(done) = span.take() {
                self.read_span(m, done, &mut pieces, &mut rest);
            }
            span = Some((src, src.offset, u64::from(c.length), vec![i]));
        }
        if let Some(done) = span {
            self.read_span(m, done, &mut pieces, &mut rest);
        }
        (pieces, rest)
    }

    /// Reads one span of held bytes and keeps each of its chunks that still verifies (the
    /// application may have changed a held state); the others are left to fetch.
    fn read_span(
        &mut self,
        m: &Manifest,
        span: Span<'a>,
        pieces: &mut Pieces,
        rest: &mut Vec<usize>,
    ) {
        let (src, start, len, members) = span;
        let files = self
            .sources
            .entry(Arc::as_ptr(&src.layout))
            .or_insert_with(|| Files::new(&src.layout, false));
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len as usize, 0);
        if files.read_into(start, &mut buf).is_err() {
            rest.extend(members);
            return;
        }
        let bytes = buf.freeze();
        let mut at = 0usize;
        for j in members {
            let c = &m.chunks[j];
            let b = bytes.slice(at..at + c.length as usize);
            at += c.length as usize;
            match ChunkHash::of(&b) == c.hash {
                true => pieces.push((c.offset, b)),
                false => rest.push(j),
            }
        }
        self.lent.push(bytes);
    }

    /// Takes back the buffers whose pieces were written (and dropped).
    fn recycle(&mut self) {
        for b in self.lent.drain(..) {
            if let Ok(buf) = b.try_into_mut() {
                self.spare.push(buf);
            }
        }
    }
}

/// Fetches the `remote` chunks (each distinct hash once, written at every offset it has),
/// re-fetching those that fail verification up to [`VERIFY_ATTEMPTS`] rounds; adds the
/// bytes moved to `report`.
async fn fetch_remote(
    m: &Manifest,
    lay: &Arc<Layout>,
    staging: &Path,
    remote: Vec<usize>,
    from: &mut ChunkFrom<'_>,
    pacer: Option<&Pacer>,
    report: &mut InstallReport,
) -> Result<(), InstallError> {
    let mut positions: HashMap<ChunkHash, Vec<u64>> = HashMap::new();
    let mut wanted: Vec<ChunkRef> = Vec::new();
    for i in remote {
        let c = m.chunks[i];
        let p = positions.entry(c.hash).or_default();
        if p.is_empty() {
            wanted.push(c);
        }
        p.push(c.offset);
    }
    let positions = Arc::new(positions);
    let mut attempt = 0;
    while !wanted.is_empty() {
        attempt += 1;
        let refs: Arc<Vec<ChunkRef>> = Arc::new(wanted);
        let (tx, rx) = mpsc::channel(4);
        let writer = spawn_writer(lay, &refs, &positions, staging, rx);
        let fetched = from.fetch(&refs, pacer, &tx).await;
        drop(tx);
        let written = writer.await.map_err(|e| InstallError::Io {
            path: staging.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
        // The writer's failure (a full disk, say) is why the receiver stopped: it is the
        // error to report, not the stopped stream it caused.
        let (failed, bytes) = written?;
        let stats = fetched?;
        match from {
            ChunkFrom::Store(_) => report.store_bytes += stats.wire_bytes,
            ChunkFrom::Plane(_) => report.wire_bytes += stats.wire_bytes,
        }
        report.fetched_bytes += bytes;
        if let Some((i, why)) = failed.first() {
            tracing::warn!(
                "{} chunk(s) failed verification (attempt {attempt}): first {}: {why}",
                failed.len(),
                refs[*i].hash
            );
            if attempt >= VERIFY_ATTEMPTS {
                return Err(InstallError::Verification {
                    chunk: refs[*i].hash,
                    attempts: attempt,
                    why: why.clone(),
                });
            }
        }
        wanted = failed.iter().map(|(i, _)| refs[*i]).collect();
    }
    Ok(())
}

/// What one fetch round's writer ends with: the indexes (into the round's refs) that failed
/// verification, why, and the raw bytes written.
type Written = (Vec<(usize, String)>, u64);

/// Chunks verified and then written as one step by a worker: small enough that their
/// bytes are still in the CPU's cache when they are written (~512 KiB at 8 KiB chunks).
const SLICE: usize = 64;

/// Spawns the writer of one fetch round: workers (one per core, at least two) each take a
/// received batch and go through it a slice at a time — verify the slice's chunks, then write
/// what verified at every position of its chunk while the bytes are still in cache. Writes
/// to the staging files take turns (one writer at a time: concurrent writes to one file only
/// contend in the kernel on its inode lock), so one worker hashes while another writes.
fn spawn_writer(
    lay: &Arc<Layout>,
    refs: &Arc<Vec<ChunkRef>>,
    positions: &Arc<HashMap<ChunkHash, Vec<u64>>>,
    staging: &Path,
    rx: mpsc::Receiver<Vec<Received>>,
) -> tokio::task::JoinHandle<Result<Written, InstallError>> {
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let turn = Arc::new(std::sync::Mutex::new(()));
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    let jobs: Vec<_> = (0..workers)
        .map(|_| {
            let w = Worker {
                lay: lay.clone(),
                refs: refs.clone(),
                positions: positions.clone(),
                staging: staging.to_owned(),
                turn: turn.clone(),
            };
            let rx = rx.clone();
            tokio::task::spawn_blocking(move || w.run(&rx))
        })
        .collect();
    let st = staging.to_owned();
    tokio::spawn(async move {
        let mut written: Written = (Vec::new(), 0);
        let mut first_err = None;
        for j in jobs {
            match j.await {
                Ok(Ok((failed, bytes))) => {
                    written.0.extend(failed);
                    written.1 += bytes;
                }
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(e) => {
                    first_err = first_err.or(Some(InstallError::Io {
                        path: st.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }))
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(written),
        }
    })
}

/// One verify-and-write worker of a fetch round.
struct Worker {
    lay: Arc<Layout>,
    refs: Arc<Vec<ChunkRef>>,
    positions: Arc<HashMap<ChunkHash, Vec<u64>>>,
    staging: PathBuf,
    turn: Arc<std::sync::Mutex<()>>,
}

type Batches = std::sync::Mutex<mpsc::Receiver<Vec<Received>>>;

impl Worker {
    /// Takes batches until the round's last; on a write failure, closes the round's
    /// receiver (the fetch then stops) and reports the failure.
    fn run(self, rx: &Batches) -> Result<Written, InstallError> {
        let mut out = Files::new(&self.lay, true);
        let mut written: Written = (Vec::new(), 0);
        loop {
            let batch = rx.lock().expect("batches lock poisoned").blocking_recv();
            let Some(batch) = batch else {
                return Ok(written);
            };
            if let Err(e) = self.batch(&mut out, batch, &mut written) {
                rx.lock().expect("batches lock poisoned").close();
                return Err(e);
            }
        }
    }

    fn batch(
        &self,
        out: &mut Files<'_>,
        batch: Vec<Received>,
        written: &mut Written,
    ) -> Result<(), InstallError> {
        let mut batch = batch.into_iter().peekable();
        while batch.peek().is_some() {
            let mut pieces = Vec::with_capacity(SLICE);
            for r in batch.by_ref().take(SLICE) {
                let want = &self.refs[r.index];
                match verify_stored(want.hash, r.codec, want.length, r.stored) {
                    Ok(raw) => {
                        written.1 += raw.len() as u64;
                        for off in &self.positions[&want.hash] {
                            pieces.push((*off, raw.clone()));
                        }
                    }
                    Err(e) => written.0.push((r.index, e.to_string())),
                }
            }
            let _turn = self.turn.lock().expect("write turn poisoned");
            out.write_pieces(pieces).map_err(io_err(&self.staging))?;
        }
        Ok(())
    }
}

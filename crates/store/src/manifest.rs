//! Manifests: what one version of one resource is made of. The Rust types here are the
//! validated form of the protobuf messages in `proto/store.proto`; decoding checks every
//! invariant, so code holding a [`Manifest`] can trust offsets, lengths and paths.

use std::collections::{HashMap, HashSet};

use prewarm_core::{ChunkHash, ResourceId, StateRef, Version};
use prewarm_proto::{Message, store as pb};

use crate::envelope::{self, EnvelopeError};

/// Magic of manifest objects.
pub const MANIFEST_MAGIC: &[u8; 4] = b"PWMF";
/// Largest manifest body accepted (decompressed).
pub const MAX_MANIFEST_BYTES: u64 = 512 << 20;
/// Most chunks one manifest may list.
pub const MAX_CHUNKS: usize = 16 << 20;
/// Largest chunk accepted anywhere (FastCDC's own maximum).
pub const MAX_CHUNK_LEN: u32 = 16 << 20;
/// Most tree entries one manifest may list.
pub const MAX_TREE_ENTRIES: usize = 4 << 20;

/// How a chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// As is.
    Raw,
    /// One zstd frame.
    Zstd,
}

impl Codec {
    /// One byte for wire formats: 0 raw, 1 zstd.
    pub fn to_u8(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
        }
    }

    /// The inverse of [`Codec::to_u8`].
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }

    pub(crate) fn from_pb(v: i32) -> Option<Self> {
        match pb::Codec::try_from(v).ok()? {
            pb::Codec::Raw => Some(Codec::Raw),
            pb::Codec::Zstd => Some(Codec::Zstd),
            pb::Codec::Unspecified => None,
        }
    }

    pub(crate) fn to_pb(self) -> i32 {
        match self {
            Codec::Raw => pb::Codec::Raw as i32,
            Codec::Zstd => pb::Codec::Zstd as i32,
        }
    }
}

/// One chunk of a snapshot's logical byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// BLAKE3 of the uncompressed bytes.
    pub hash: ChunkHash,
    /// Offset in the logical stream.
    pub offset: u64,
    /// Uncompressed length.
    pub length: u32,
    /// Stored (compressed) length.
    pub stored_length: u32,
    /// How it is stored.
    pub codec: Codec,
    /// XXH3-64 of the uncompressed bytes (0 when unknown): lets the next snapshot of the same
    /// source skip BLAKE3 and CDC over unchanged regions.
    pub fingerprint: u64,
}

/// Content-defined chunking parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Smallest chunk (except a stream's last).
    pub min_size: u32,
    /// Target average chunk size: the state-granularity knob.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
}

impl ChunkerParams {
    /// min = avg/4, max = avg*4: FastCDC's customary spread.
    pub fn with_avg(avg: u32) -> Result<Self, String> {
        let p = Self {
            min_size: avg / 4,
            avg_size: avg,
            max_size: avg.saturating_mul(4),
        };
        p.check().map(|()| p)
    }

    /// Checks the bounds FastCDC requires.
    pub fn check(&self) -> Result<(), String> {
        let ok = self.min_size >= fastcdc::v2020::MINIMUM_MIN as u32
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.avg_size >= fastcdc::v2020::AVERAGE_MIN as u32
            && self.avg_size <= fastcdc::v2020::AVERAGE_MAX as u32
            && self.max_size <= MAX_CHUNK_LEN;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunker sizes min {} / avg {} / max {} are out of range (average 1 KiB to 4 MiB, max at most 16 MiB)",
                self.min_size, self.avg_size, self.max_size
            ))
        }
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        // Chosen from the granularity table in BENCHMARKS.md.
        Self::with_avg(crate::DEFAULT_AVG_CHUNK).expect("default chunker params are valid")
    }
}

/// What a snapshot was taken of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// One regular file.
    File,
    /// A directory tree.
    Directory,
    /// An in-memory buffer.
    Buffer,
}

/// The kind of a directory-tree entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// One entry of a directory snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Relative `/`-separated path, raw bytes.
    pub path: Vec<u8>,
    /// Kind.
    pub kind: EntryKind,
    /// Unix permission bits.
    pub mode: u32,
    /// File size.
    pub size: u64,
    /// Offset of the file's bytes in the logical stream.
    pub offset: u64,
    /// Link target, raw bytes.
    pub symlink_target: Vec<u8>,
    /// Modification time, Unix milliseconds.
    pub mtime_unix_ms: i64,
}

/// One version of one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Resource and version.
    pub state: StateRef,
    /// The version this one was taken after, if any.
    pub parent: Option<Version>,
    /// Creation time, Unix milliseconds.
    pub created_unix_ms: i64,
    /// Total uncompressed bytes.
    pub logical_size: u64,
    /// What it was taken of.
    pub kind: SourceKind,
    /// The logical stream, in order.
    pub chunks: Vec<ChunkRef>,
    /// Directory snapshots: the tree, parents before children.
    pub tree: Vec<TreeEntry>,
    /// How the stream was cut.
    pub chunker: ChunkerParams,
    /// The version whose chunk list this manifest's stored form is a delta against (always
    /// the parent), or `None` when stored in full. The chunk list above is always resolved.
    pub delta_base: Option<Version>,
    /// Deltas between this manifest and the nearest full one, as actually resolved (0 when
    /// stored in full).
    pub chain_depth: u32,
}

/// Longest delta chain a writer creates: every 8th version (at most) is stored in full.
pub const MAX_WRITE_CHAIN: u32 = 8;
/// Longest delta chain a reader follows.
pub const MAX_READ_CHAIN: u32 = 64;

/// A manifest whose envelope and protobuf decoded, but whose delta (if any) is unresolved.
pub struct RawManifest(pb::Manifest);

impl RawManifest {
    /// The version whose manifest must be supplied to [`RawManifest::resolve`], if any.
    pub fn base(&self) -> Option<StateRef> {
        let version = Version::new(self.0.base_version)?;
        Some(StateRef {
            resource: ResourceId::new(self.0.resource.clone()).ok()?,
            version,
        })
    }

    /// Validates and, for a delta, applies it to `base`'s chunk list.
    pub fn resolve(self, base: Option<&Manifest>) -> Result<Manifest, ManifestError> {
        from_pb(self.0, base).map_err(ManifestError::Invalid)
    }
}

/// Why a manifest object could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The frame is damaged, foreign or from an unknown format version.
    #[error("manifest frame: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The body is not a valid protobuf message.
    #[error("manifest body is not valid protobuf: {0}")]
    Protobuf(#[from] prewarm_proto::DecodeError),
    /// The message breaks an invariant.
    #[error("manifest is invalid: {0}")]
    Invalid(String),
}

impl Manifest {
    /// Encodes in full into a framed, checksummed object.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(Some(chunks_to_pb(&self.chunks)), 0, None, 0)
    }

    /// Encodes as a delta against `base` (which must be the parent) when that is much
    /// smaller than the full list and the chain is short enough; `None` otherwise.
    pub fn encode_delta(&self, base: &Manifest) -> Option<Vec<u8>> {
        if Some(base.state.version) != self.parent
            || base.state.resource != self.state.resource
            || base.chain_depth >= MAX_WRITE_CHAIN
        {
            return None;
        }
        let delta = diff_chunks(&base.chunks, &self.chunks);
        // Worth it only below half the full list's size (~45 bytes a chunk, ~16 a step).
        let inserted = delta.inserted.as_ref().map_or(0, |l| l.lengths.len());
        let delta_cost = inserted * 45 + delta.copy_start.len() * 16;
        if delta_cost * 2 > self.chunks.len() * 45 {
            return None;
        }
        Some(self.encode_with(
            None,
            base.state.version.get(),
            Some(delta),
            base.chain_depth + 1,
        ))
    }

    fn encode_with(
        &self,
        chunks: Option<pb::ChunkList>,
        base_version: u64,
        chunk_delta: Option<pb::ChunkDelta>,
        chain_depth: u32,
    ) -> Vec<u8> {
        let kind = match self.kind {
            SourceKind::File => pb::SourceKind::File,
            SourceKind::Directory => pb::SourceKind::Directory,
            SourceKind::Buffer => pb::SourceKind::Buffer,
        };
        let msg = pb::Manifest {
            resource: self.state.resource.to_string(),
            version: self.state.version.get(),
            parent_version: self.parent.map_or(0, Version::get),
            created_unix_ms: self.created_unix_ms,
            logical_size: self.logical_size,
            kind: kind as i32,
            chunks,
            tree: self.tree.iter().map(entry_to_pb).collect(),
            chunker: Some(pb::ChunkerParams {
                min_size: self.chunker.min_size,
                avg_size: self.chunker.avg_size,
                max_size: self.chunker.max_size,
            }),
            base_version,
            chunk_delta,
            chain_depth,
        };
        envelope::seal(MANIFEST_MAGIC, &msg.encode_to_vec())
    }

    /// Decodes and validates a framed manifest object stored in full.
    pub fn decode(data: &[u8]) -> Result<Self, ManifestError> {
        Self::decode_raw(data)?.resolve(None)
    }

    /// Checks the frame and parses the protobuf; the caller resolves any delta.
    pub fn decode_raw(data: &[u8]) -> Result<RawManifest, ManifestError> {
        let body = envelope::open(MANIFEST_MAGIC, data, MAX_MANIFEST_BYTES)?;
        Ok(RawManifest(pb::Manifest::decode(body)?))
    }

    /// The chunks holding the bytes `[offset, offset + len)` of the stream (files start on
    /// chunk boundaries, so a file's chunks are exactly the ones returned).
    pub fn chunks_in(&self, offset: u64, len: u64) -> &[ChunkRef] {
        let start = self.chunks.partition_point(|c| c.offset < offset);
        let end = self.chunks.partition_point(|c| c.offset < offset + len);
        &self.chunks[start..end]
    }
}

fn chunks_to_pb(chunks: &[ChunkRef]) -> pb::ChunkList {
    let mut hashes = Vec::with_capacity(chunks.len() * 32);
    for c in chunks {
        hashes.extend_from_slice(c.hash.as_bytes());
    }
    pb::ChunkList {
        hashes: hashes.into(),
        lengths: chunks.iter().map(|c| c.length).collect(),
        stored_lengths: chunks.iter().map(|c| c.stored_length).collect(),
        codecs: chunks
            .iter()
            .map(|c| c.codec.to_pb() as u8)
            .collect::<Vec<u8>>()
            .into(),
        fingerprints: chunks.iter().map(|c| c.fingerprint).collect(),
    }
}

/// Rebuilds chunk refs from the columns; returns them and the stream length they cover.
fn chunks_from_pb(l: pb::ChunkList) -> Result<(Vec<ChunkRef>, u64), String> {
    let n = l.lengths.len();
    if n > MAX_CHUNKS {
        return Err(format!("{n} chunks exceed the limit of {MAX_CHUNKS}"));
    }
    if l.hashes.len() != 32 * n || l.stored_lengths.len() != n || l.codecs.len() != n {
        return Err(format!(
            "chunk list columns disagree: {n} lengths, {} hash bytes, {} stored lengths, {} codecs",
            l.hashes.len(),
            l.stored_lengths.len(),
            l.codecs.len()
        ));
    }
    if !l.fingerprints.is_empty() && l.fingerprints.len() != n {
        return Err(format!(
            "{} fingerprints for {n} chunks",
            l.fingerprints.len()
        ));
    }
    let mut chunks = Vec::with_capacity(n);
    let mut offset = 0u64;
    for i in 0..n {
        let (length, stored_length) = (l.lengths[i], l.stored_lengths[i]);
        let codec = Codec::from_pb(i32::from(l.codecs[i]))
            .ok_or_else(|| format!("chunk {i}: unknown codec {}", l.codecs[i]))?;
        if length == 0 || length > MAX_CHUNK_LEN {
            return Err(format!("chunk {i}: length {length} out of range"));
        }
        if u64::from(stored_length) > crate::max_stored_len(length) {
            return Err(format!(
                "chunk {i}: stored length {stored_length} is impossible for {length} bytes"
            ));
        }
        chunks.push(ChunkRef {
            hash: ChunkHash::from_slice(&l.hashes[32 * i..32 * (i + 1)]).expect("32-byte slice"),
            offset,
            length,
            stored_length,
            codec,
            fingerprint: l.fingerprints.get(i).copied().unwrap_or(0),
        });
        offset += u64::from(length);
    }
    Ok((chunks, offset))
}

fn entry_to_pb(e: &TreeEntry) -> pb::TreeEntry {
    let kind = match e.kind {
        EntryKind::File => pb::EntryKind::File,
        EntryKind::Dir => pb::EntryKind::Dir,
        EntryKind::Symlink => pb::EntryKind::Symlink,
    };
    pb::TreeEntry {
        path: e.path.clone().into(),
        kind: kind as i32,
        mode: e.mode,
        size: e.size,
        offset: e.offset,
        symlink_target: e.symlink_target.clone().into(),
        mtime_unix_ms: e.mtime_unix_ms,
    }
}

/// Expresses `new` as copy runs of `base` plus inserted chunks.
fn diff_chunks(base: &[ChunkRef], new: &[ChunkRef]) -> pb::ChunkDelta {
    let mut first: HashMap<ChunkHash, usize> = HashMap::with_capacity(base.len());
    for (i, c) in base.iter().enumerate() {
        first.entry(c.hash).or_insert(i);
    }
    let mut d = pb::ChunkDelta::default();
    let mut inserted = Vec::new();
    // The open step: (copy start, copy count, insert count).
    let mut step: Option<(usize, u32, u32)> = None;
    for c in new {
        if let Some((start, count, 0)) = step.as_mut() {
            let next = *start + *count as usize;
            if base
                .get(next)
                .is_some_and(|b| b.hash == c.hash && b.length == c.length)
            {
                *count += 1;
                continue;
            }
        }
        match first.get(&c.hash).filter(|&&k| base[k].length == c.length) {
            Some(&k) => {
                if let Some((s, n, ins)) = step.replace((k, 1, 0)) {
                    d.copy_start.push(s as u64);
                    d.copy_count.push(n);
                    d.insert_count.push(ins);
                }
            }
            None => {
                step.get_or_insert((0, 0, 0)).2 += 1;
                inserted.push(*c);
            }
        }
    }
    if let Some((s, n, ins)) = step {
        d.copy_start.push(s as u64);
        d.copy_count.push(n);
        d.insert_count.push(ins);
    }
    d.inserted = Some(chunks_to_pb(&inserted));
    d
}

/// Applies a delta to `base`'s chunks; returns the chunks and the stream length.
fn apply_delta(base: &[ChunkRef], d: pb::ChunkDelta) -> Result<(Vec<ChunkRef>, u64), String> {
    let steps = d.copy_start.len();
    if d.copy_count.len() != steps || d.insert_count.len() != steps {
        return Err("chunk delta columns disagree".into());
    }
    let (inserted, _) = chunks_from_pb(d.inserted.unwrap_or_default())?;
    let mut ins = inserted.into_iter();
    let mut out: Vec<ChunkRef> = Vec::new();
    let mut offset = 0u64;
    for i in 0..steps {
        let (start, count) = (d.copy_start[i], u64::from(d.copy_count[i]));
        let end = start
            .checked_add(count)
            .filter(|&e| e <= base.len() as u64)
            .ok_or_else(|| {
                format!(
                    "chunk delta step {i} copies {count} chunks from {start}, past the base's {}",
                    base.len()
                )
            })?;
        if out.len() as u64 + count + u64::from(d.insert_count[i]) > MAX_CHUNKS as u64 {
            return Err(format!("chunk delta yields more than {MAX_CHUNKS} chunks"));
        }
        let copied = base[start as usize..end as usize].iter().copied();
        let taken: Vec<ChunkRef> = ins.by_ref().take(d.insert_count[i] as usize).collect();
        if taken.len() != d.insert_count[i] as usize {
            return Err(format!(
                "chunk delta step {i} inserts more chunks than the delta holds"
            ));
        }
        for mut c in copied.chain(taken) {
            c.offset = offset;
            offset += u64::from(c.length);
            out.push(c);
        }
    }
    if ins.next().is_some() {
        return Err("chunk delta holds inserted chunks no step uses".into());
    }
    Ok((out, offset))
}

fn from_pb(m: pb::Manifest, base: Option<&Manifest>) -> Result<Manifest, String> {
    let resource = ResourceId::new(m.resource).map_err(|e| e.to_string())?;
    let version = Version::new(m.version).ok_or("version 0")?;
    let parent = Version::new(m.parent_version);
    if parent.is_some_and(|p| p >= version) {
        return Err(format!(
            "parent version {} is not older than {version}",
            m.parent_version
        ));
    }
    let kind = match pb::SourceKind::try_from(m.kind) {
        Ok(pb::SourceKind::File) => SourceKind::File,
        Ok(pb::SourceKind::Directory) => SourceKind::Directory,
        Ok(pb::SourceKind::Buffer) => SourceKind::Buffer,
        _ => return Err(format!("unknown source kind {}", m.kind)),
    };
    let c = m.chunker.ok_or("no chunker parameters")?;
    let chunker = ChunkerParams {
        min_size: c.min_size,
        avg_size: c.avg_size,
        max_size: c.max_size,
    };
    chunker.check()?;
    let delta_base = Version::new(m.base_version);
    let (chunks, next) = match (delta_base, m.chunk_delta) {
        (None, None) => {
            if m.chain_depth != 0 {
                return Err("a full manifest claims a delta chain".into());
            }
            chunks_from_pb(m.chunks.unwrap_or_default())?
        }
        (Some(b), Some(delta)) => {
            if delta_base != parent {
                return Err(format!("delta base {b} is not the parent version"));
            }
            if m.chunks.as_ref().is_some_and(|c| !c.lengths.is_empty()) {
                return Err("manifest holds both a chunk list and a delta".into());
            }
            let base = base.ok_or_else(|| {
                format!("stored as a delta of version {b}, which was not supplied")
            })?;
            if base.state.version != b || base.state.resource.as_str() != resource.as_str() {
                return Err(format!(
                    "delta base supplied is {}, expected {resource}@{b}",
                    base.state
                ));
            }
            // The stored depth is a hint (a base rewritten in full by gc shortens the chain);
            // the depth that counts is the one actually followed, bounded by the reader.
            if base.chain_depth >= MAX_READ_CHAIN {
                return Err(format!("delta chain longer than {MAX_READ_CHAIN}"));
            }
            if base.chunker != chunker {
                return Err("delta base was cut with other chunker parameters".into());
            }
            apply_delta(&base.chunks, delta)?
        }
        _ => return Err("base version and chunk delta must come together".into()),
    };
    if next != m.logical_size {
        return Err(format!(
            "chunks cover {next} bytes but the logical size is {}",
            m.logical_size
        ));
    }
    let tree = validate_tree(m.tree, kind, &chunks, m.logical_size)?;
    Ok(Manifest {
        state: StateRef { resource, version },
        parent,
        created_unix_ms: m.created_unix_ms,
        logical_size: m.logical_size,
        kind,
        chunks,
        tree,
        chunker,
        delta_base,
        chain_depth: base
            .filter(|_| delta_base.is_some())
            .map_or(0, |b| b.chain_depth + 1),
    })
}

/// Checks that a tree is safe to materialise: relative normal paths, each under a directory
/// listed before it (never under a symlink), no duplicates, and file ranges that tile the
/// stream in order on chunk boundaries.
fn validate_tree(
    tree: Vec<pb::TreeEntry>,
    kind: SourceKind,
    chunks: &[ChunkRef],
    logical_size: u64,
) -> Result<Vec<TreeEntry>, String> {
    if kind != SourceKind::Directory {
        return if tree.is_empty() {
            Ok(Vec::new())
        } else {
            Err("a file or buffer snapshot has a tree".into())
        };
    }
    if tree.len() > MAX_TREE_ENTRIES {
        return Err(format!(
            "{} tree entries exceed the limit of {MAX_TREE_ENTRIES}",
            tree.len()
        ));
    }
    let boundaries: HashSet<u64> = chunks
        .iter()
        .map(|c| c.offset)
        .chain([logical_size])
        .collect();
    let mut dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut next = 0u64;
    let mut out = Vec::with_capacity(tree.len());
    for e in tree {
        let path = e.path.to_vec();
        let shown = String::from_utf8_lossy(&path).into_owned();
        check_rel_path(&path).map_err(|why| format!("tree path {shown:?}: {why}"))?;
        if let Some(slash) = path.iter().rposition(|&b| b == b'/')
            && !dirs.contains(&path[..slash])
        {
            return Err(format!(
                "tree path {shown:?}: its parent is not a directory listed before it"
            ));
        }
        if !seen.insert(path.clone()) {
            return Err(format!("tree path {shown:?} appears twice"));
        }
        let kind = match pb::EntryKind::try_from(e.kind) {
            Ok(pb::EntryKind::File) => EntryKind::File,
            Ok(pb::EntryKind::Dir) => EntryKind::Dir,
            Ok(pb::EntryKind::Symlink) => EntryKind::Symlink,
            _ => {
                return Err(format!(
                    "tree path {shown:?}: unknown entry kind {}",
                    e.kind
                ));
            }
        };
        match kind {
            EntryKind::Dir => {
                dirs.insert(path.clone());
            }
            EntryKind::File => {
                if e.offset != next {
                    return Err(format!(
                        "file {shown:?} starts at {} but the stream is at {next}",
                        e.offset
                    ));
                }
                if e.size > 0 && !boundaries.contains(&e.offset) {
                    return Err(format!("file {shown:?} does not start on a chunk boundary"));
                }
                next = e.offset.checked_add(e.size).ok_or("file size overflows")?;
                if next > logical_size || !boundaries.contains(&next) {
                    return Err(format!("file {shown:?} does not end on a chunk boundary"));
                }
            }
            EntryKind::Symlink => {
                if e.symlink_target.is_empty() || e.symlink_target.contains(&0) {
                    return Err(format!(
                        "symlink {shown:?} has an empty or NUL-containing target"
                    ));
                }
            }
        }
        out.push(TreeEntry {
            path,
            kind,
            mode: e.mode & 0o7777,
            size: if kind == EntryKind::File { e.size } else { 0 },
            offset: if kind == EntryKind::File { e.offset } else { 0 },
            symlink_target: e.symlink_target.to_vec(),
            mtime_unix_ms: e.mtime_unix_ms,
        });
    }
    if next != logical_size {
        return Err(format!(
            "files cover {next} bytes but the logical size is {logical_size}"
        ));
    }
    Ok(out)
}

/// A safe relative path: non-empty `/`-separated segments, none `.` or `..`, no NUL.
pub fn check_rel_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.contains(&0) {
        return Err("NUL byte in path");
    }
    for seg in path.split(|&b| b == b'/') {
        if seg.is_empty() || seg == b"." || seg == b".." {
            return Err("empty, '.' or '..' segment (or an absolute path)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(offset: u64, len: u32) -> ChunkRef {
        ChunkRef {
            hash: ChunkHash::of(&offset.to_le_bytes()),
            offset,
            length: len,
            stored_length: len,
            codec: Codec::Raw,
            fingerprint: offset,
        }
    }

    fn file(path: &str, offset: u64, size: u64) -> TreeEntry {
        TreeEntry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            size,
            offset,
            symlink_target: vec![],
            mtime_unix_ms: 0,
        }
    }

    fn dir(path: &str) -> TreeEntry {
        TreeEntry {
            kind: EntryKind::Dir,
            mode: 0o755,
            ..file(path, 0, 0)
        }
    }

    fn manifest(tree: Vec<TreeEntry>) -> Manifest {
        Manifest {
            state: StateRef {
                resource: ResourceId::new("a/b").unwrap(),
                version: Version::new(2).unwrap(),
            },
            parent: Version::new(1),
            created_unix_ms: 5,
            logical_size: 300,
            kind: SourceKind::Directory,
            chunks: vec![chunk(0, 100), chunk(100, 200)],
            tree,
            chunker: ChunkerParams::with_avg(4096).unwrap(),
            delta_base: None,
            chain_depth: 0,
        }
    }

    /// A buffer manifest over `n` distinct chunks of 100 bytes, version `v`.
    fn flat(v: u64, hashes: &[u64]) -> Manifest {
        let chunks: Vec<ChunkRef> = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| ChunkRef {
                hash: ChunkHash::of(&h.to_le_bytes()),
                offset: 100 * i as u64,
                length: 100,
                stored_length: 100,
                codec: Codec::Raw,
                fingerprint: *h,
            })
            .collect();
        Manifest {
            state: StateRef {
                resource: ResourceId::new("r").unwrap(),
                version: Version::new(v).unwrap(),
            },
            parent: Version::new(v - 1),
            logical_size: 100 * hashes.len() as u64,
            kind: SourceKind::Buffer,
            chunks,
            tree: vec![],
            ..manifest(vec![])
        }
    }

    #[test]
    fn deltas_round_trip_and_stay_small() {
        let old: Vec<u64> = (0..1000).collect();
        let mut new = old.clone();
        new[10] = 5000; // changed
        new.insert(500, 6000); // inserted
        new.remove(900); // deleted
        new.push(7); // repeated from the base
        let base = flat(1, &old);
        let m = flat(2, &new);
        let full = m.encode();
        let delta = m
            .encode_delta(&base)
            .expect("a small change is worth a delta");
        assert!(
            delta.len() * 10 < full.len(),
            "{} vs {}",
            delta.len(),
            full.len()
        );
        let back = Manifest::decode_raw(&delta).unwrap();
        assert_eq!(back.base().unwrap().version.get(), 1);
        let back = back.resolve(Some(&base)).unwrap();
        assert_eq!(back.chunks, m.chunks);
        assert_eq!((back.delta_base, back.chain_depth), (Version::new(1), 1));
        // A delta cannot be read without its base, nor against the wrong one.
        let e = Manifest::decode(&delta).unwrap_err().to_string();
        assert!(e.contains("not supplied"), "{e}");
        let e = Manifest::decode_raw(&delta)
            .unwrap()
            .resolve(Some(&flat(1, &[1, 2])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("past the base"), "{e}");
        // A total rewrite is stored in full.
        let other: Vec<u64> = (10_000..11_000).collect();
        assert!(flat(2, &other).encode_delta(&base).is_none());
    }

    #[test]
    fn delta_chains_are_bounded() {
        let hashes: Vec<u64> = (0..100).collect();
        let mut base = flat(1, &hashes);
        base.chain_depth = MAX_WRITE_CHAIN;
        assert!(
            flat(2, &hashes).encode_delta(&base).is_none(),
            "chain full: write in full"
        );
    }

    #[test]
    fn round_trip() {
        let m = manifest(vec![dir("d"), file("d/x", 0, 100), file("y", 100, 200)]);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        assert_eq!(m.chunks_in(100, 200), &m.chunks[1..]);
    }

    fn check_invalid(m: Manifest, want: &str) {
        let e = Manifest::decode(&m.encode()).unwrap_err().to_string();
        assert!(e.contains(want), "{e} should contain {want}");
    }

    #[test]
    fn rejects_unsafe_or_inconsistent_trees() {
        check_invalid(manifest(vec![file("../x", 0, 300)]), "'..'");
        check_invalid(manifest(vec![file("/x", 0, 300)]), "absolute");
        check_invalid(
            manifest(vec![file("d/x", 0, 300)]),
            "parent is not a directory",
        );
        check_invalid(
            manifest(vec![file("x", 0, 100), file("x", 100, 200)]),
            "twice",
        );
        check_invalid(
            manifest(vec![file("x", 0, 50), file("y", 50, 250)]),
            "chunk boundary",
        );
        check_invalid(manifest(vec![file("x", 0, 100)]), "files cover 100");
        let link = TreeEntry {
            kind: EntryKind::Symlink,
            symlink_target: b"/etc".to_vec(),
            ..file("l", 0, 0)
        };
        check_invalid(
            manifest(vec![link, file("l/x", 0, 300)]),
            "parent is not a directory",
        );
    }

    #[test]
    fn rejects_inconsistent_chunks() {
        let mut m = manifest(vec![file("x", 0, 300)]);
        m.chunks[1].length = 0;
        check_invalid(m, "out of range");
        let mut m = manifest(vec![file("x", 0, 300)]);
        m.logical_size = 301;
        check_invalid(m, "logical size");
        let mut m = manifest(vec![file("x", 0, 300)]);
        m.chunks[0].stored_length = 1_000_000;
        check_invalid(m, "impossible");
    }
}

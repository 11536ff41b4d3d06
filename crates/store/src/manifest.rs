//! Manifests: what one version of one resource is made of. The Rust types here are the
//! validated form of the protobuf messages in `proto/store.proto`; decoding checks every
//! invariant, so code holding a [`Manifest`] can trust offsets, lengths and paths.

use std::collections::HashSet;

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
    /// Encodes into a framed, checksummed object.
    pub fn encode(&self) -> Vec<u8> {
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
            chunks: Some(chunks_to_pb(&self.chunks)),
            tree: self.tree.iter().map(entry_to_pb).collect(),
            chunker: Some(pb::ChunkerParams {
                min_size: self.chunker.min_size,
                avg_size: self.chunker.avg_size,
                max_size: self.chunker.max_size,
            }),
        };
        envelope::seal(MANIFEST_MAGIC, &msg.encode_to_vec())
    }

    /// Decodes and validates a framed manifest object.
    pub fn decode(data: &[u8]) -> Result<Self, ManifestError> {
        let body = envelope::open(MANIFEST_MAGIC, data, MAX_MANIFEST_BYTES)?;
        let msg = pb::Manifest::decode(body)?;
        from_pb(msg).map_err(ManifestError::Invalid)
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

fn from_pb(m: pb::Manifest) -> Result<Manifest, String> {
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
    let (chunks, next) = chunks_from_pb(m.chunks.unwrap_or_default())?;
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
        if let Some(slash) = path.iter().rposition(|&b| b == b'/') {
            if !dirs.contains(&path[..slash]) {
                return Err(format!(
                    "tree path {shown:?}: its parent is not a directory listed before it"
                ));
            }
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
        }
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

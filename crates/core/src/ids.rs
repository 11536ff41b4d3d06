//! Strong id types. A bare `String` or `u64` never crosses a crate boundary as an id.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest accepted resource id, in bytes.
pub const MAX_RESOURCE_ID_LEN: usize = 256;
/// Longest `/`-separated segment of a resource id, in bytes: each segment is a directory
/// name in the store and in every agent's cache, and file systems stop at 255 bytes, with
/// room left for the suffixes prewarm adds (temporary siblings, version directories).
pub const MAX_SEGMENT_LEN: usize = 200;
/// Longest accepted capacity id, in bytes.
pub const MAX_CAPACITY_ID_LEN: usize = 128;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("{what} id is empty")]
    Empty {
        /// Which kind of id.
        what: &'static str,
    },
    /// The id is longer than allowed.
    #[error("{what} id is {len} bytes long; the limit is {max}")]
    TooLong {
        /// Which kind of id.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id holds bytes that are not UTF-8.
    #[error("{what} id is not valid UTF-8")]
    NotUtf8 {
        /// Which kind of id.
        what: &'static str,
    },
    /// The id holds a character outside its alphabet.
    #[error("{what} id {id:?} contains {ch:?} at byte {at}; allowed are A-Z a-z 0-9 . _ - {extra}")]
    BadChar {
        /// Which kind of id.
        what: &'static str,
        /// The offending id.
        id: String,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
        /// Extra allowed characters, for the message.
        extra: &'static str,
    },
    /// A `/`-separated segment is empty, `.`, `..` (this also rejects a leading `/`), or
    /// longer than [`MAX_SEGMENT_LEN`].
    #[error(
        "resource id {id:?} has an invalid segment {segment:?} (segments may not be empty, \".\" or \"..\", or longer than {MAX_SEGMENT_LEN} bytes)"
    )]
    BadSegment {
        /// The offending id.
        id: String,
        /// The offending segment.
        segment: String,
    },
}

/// A validated id's text, shared (`Arc<str>`: the decision engine clones ids per event, and
/// a clone is a reference count, not an allocation), with its hash computed once when the
/// id is made: the engine's maps hash an id many times per event, and two different ids are
/// told apart by their hashes before their bytes are compared. The hash is keyed per process
/// (like the maps' own hashers), so crafted ids cannot be made to collide.
#[derive(Clone)]
struct Text {
    s: Arc<str>,
    h: u64,
}

impl Text {
    fn new(s: String) -> Self {
        use std::hash::BuildHasher;
        static KEY: std::sync::OnceLock<foldhash::quality::RandomState> =
            std::sync::OnceLock::new();
        let h = KEY.get_or_init(Default::default).hash_one(s.as_str());
        Self { s: s.into(), h }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.s, &other.s) || (self.h == other.h && self.s == other.s)
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.s.cmp(&other.s)
    }
}

impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.h);
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.s
    }
}

/// The id of a piece of shared state: model weights, a cache, a dataset, per-tenant data.
///
/// 1–256 bytes of `[A-Za-z0-9._/-]`, made of `/`-separated segments, none of them empty,
/// `.` or `..` or over 200 bytes, so an id is always a safe relative path that every file
/// system prewarm stores it on can hold.
///
/// Shared and hashed once (see `Text`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceId(Text);

impl ResourceId {
    /// Validates `s` as a resource id.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_chars("resource", &s, MAX_RESOURCE_ID_LEN, true)?;
        if let Some(segment) = s.split('/').find(|seg| {
            seg.is_empty() || *seg == "." || *seg == ".." || seg.len() > MAX_SEGMENT_LEN
        }) {
            return Err(IdError::BadSegment {
                segment: segment.to_owned(),
                id: s,
            });
        }
        Ok(Self(Text::new(s)))
    }

    /// Validates raw bytes (for example a path from the file system) as a resource id.
    pub fn from_bytes(b: &[u8]) -> Result<Self, IdError> {
        let s = std::str::from_utf8(b).map_err(|_| IdError::NotUtf8 { what: "resource" })?;
        Self::new(s)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn check_chars(what: &'static str, s: &str, max: usize, slash: bool) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > max {
        return Err(IdError::TooLong {
            what,
            len: s.len(),
            max,
        });
    }
    let ok =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || (slash && c == '/');
    if let Some((at, ch)) = s.char_indices().find(|&(_, c)| !ok(c)) {
        return Err(IdError::BadChar {
            what,
            id: s.to_owned(),
            ch,
            at,
            extra: if slash { "/" } else { "" },
        });
    }
    Ok(())
}

impl TryFrom<String> for ResourceId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<ResourceId> for String {
    fn from(r: ResourceId) -> String {
        r.0.s.as_ref().to_owned()
    }
}

impl FromStr for ResourceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({:?})", &*self.0)
    }
}

/// A compute capacity (VM, container, GPU pod): the unit that holds local state.
///
/// 1–128 bytes of `[A-Za-z0-9._-]`.
///
/// Shared and hashed once (see `Text`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CapacityId(Text);

impl CapacityId {
    /// Validates `s` as a capacity id.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        check_chars("capacity", &s, MAX_CAPACITY_ID_LEN, false)?;
        Ok(Self(Text::new(s)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CapacityId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl From<CapacityId> for String {
    fn from(c: CapacityId) -> String {
        c.0.s.as_ref().to_owned()
    }
}

impl FromStr for CapacityId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl fmt::Display for CapacityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CapacityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CapacityId({:?})", &*self.0)
    }
}

/// A version of a resource. Versions start at 1 and strictly increase per resource.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    /// The first version of every resource.
    pub const FIRST: Version = Version(1);

    /// Wraps a raw version number; 0 is not a version.
    pub fn new(v: u64) -> Option<Self> {
        (v > 0).then_some(Self(v))
    }

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The version after this one.
    pub fn next(self) -> Self {
        Self(
            self.0
                .checked_add(1)
                .expect("version space of 2^64 exhausted"),
        )
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n: u64 = s
            .trim_start_matches('v')
            .parse()
            .map_err(|_| format!("{s:?} is not a version number"))?;
        Version::new(n).ok_or_else(|| "version 0 does not exist; versions start at 1".to_owned())
    }
}

/// One resource at one version: the unit that snapshots produce and transfers move.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct StateRef {
    /// Which resource.
    pub resource: ResourceId,
    /// Which version of it.
    pub version: Version,
}

impl fmt::Display for StateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.resource, self.version)
    }
}

/// The BLAKE3 hash of a chunk's uncompressed bytes: the chunk's address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChunkHash([u8; 32]);

/// Feeds a hash map only the first 8 bytes: they are already uniformly distributed (a
/// BLAKE3 output), and the map's keyed hasher still mixes them, so lookups in the chunk
/// indexes (hundreds of thousands per GiB moved) hash 8 bytes instead of 40.
impl std::hash::Hash for ChunkHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(
            self.0[..8].try_into().expect("8 of 32 bytes"),
        ));
    }
}

impl ChunkHash {
    /// Hashes `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// Wraps 32 raw bytes.
    pub fn from_array(b: [u8; 32]) -> Self {
        Self(b)
    }

    /// Wraps a 32-byte slice; `None` for any other length.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for ChunkHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| format!("bad chunk hash {s:?}: {e}"))?;
        Ok(Self(out))
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({})", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_resource(input: &str, ok: bool) {
        assert_eq!(ResourceId::new(input).is_ok(), ok, "{input:?}");
    }

    #[test]
    fn ids_made_apart_are_equal_hash_alike_and_order_by_their_text() {
        use std::collections::{BTreeSet, HashSet};
        let ids: Vec<ResourceId> = ["m/b", "m/a", "m/c", "m/a"]
            .iter()
            .map(|s| ResourceId::new(*s).unwrap())
            .collect();
        assert_eq!(ids[1], ids[3]);
        assert_ne!(ids[0], ids[1]);
        let set: HashSet<&ResourceId> = ids.iter().collect();
        assert_eq!(set.len(), 3);
        assert!(set.contains(&ResourceId::new("m/c").unwrap()));
        let sorted: Vec<&str> = ids
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(ResourceId::as_str)
            .collect();
        assert_eq!(sorted, ["m/a", "m/b", "m/c"]);
        let caps: HashSet<CapacityId> = ["c1", "c2", "c1"]
            .iter()
            .map(|s| CapacityId::new(*s).unwrap())
            .collect();
        assert_eq!(caps.len(), 2);
        assert!(CapacityId::new("c1").unwrap() < CapacityId::new("c2").unwrap());
    }

    #[test]
    fn resource_ids() {
        for good in [
            "a",
            "models/llama-7b/v1.safetensors",
            "x.y_z-1",
            "a/b/c",
            &"a".repeat(200),
            &format!("{}/{}", "a".repeat(200), "b".repeat(55)),
        ] {
            check_resource(good, true);
        }
        for bad in [
            "",
            "../x",
            "/abs",
            "a//b",
            "a/",
            "a/./b",
            "a/..",
            ".",
            "..",
            "sp ace",
            "ü",
            "a\\b",
            &"a".repeat(257),
            // One segment a file system cannot name (the store and caches make it a directory).
            &"a".repeat(201),
            &format!("m/{}", "x".repeat(254)),
        ] {
            check_resource(bad, false);
        }
    }

    #[test]
    fn resource_id_errors_name_the_problem() {
        let e = ResourceId::new("a//b").unwrap_err().to_string();
        assert!(e.contains("invalid segment"), "{e}");
        let e = ResourceId::new("x".repeat(300)).unwrap_err().to_string();
        assert!(e.contains("300 bytes") && e.contains("256"), "{e}");
        let e = ResourceId::from_bytes(&[b'a', 0xff])
            .unwrap_err()
            .to_string();
        assert!(e.contains("UTF-8"), "{e}");
        let e = ResourceId::new("a b").unwrap_err().to_string();
        assert!(e.contains("' '"), "{e}");
    }

    #[test]
    fn resource_id_serde_validates() {
        let r: Result<ResourceId, _> = serde_json::from_str("\"../etc\"");
        assert!(r.is_err());
        let r: ResourceId = serde_json::from_str("\"ok/id\"").unwrap();
        assert_eq!(r.as_str(), "ok/id");
    }

    #[test]
    fn capacity_ids() {
        assert!(CapacityId::new("gpu-pod-3").is_ok());
        assert!(CapacityId::new("a/b").is_err());
        assert!(CapacityId::new("").is_err());
    }

    #[test]
    fn versions() {
        assert!(Version::new(0).is_none());
        assert_eq!(Version::FIRST.next().get(), 2);
        assert_eq!("v7".parse::<Version>().unwrap().get(), 7);
        assert!("0".parse::<Version>().is_err());
        assert!("x".parse::<Version>().is_err());
    }

    #[test]
    fn chunk_hash_hex_round_trip() {
        let h = ChunkHash::of(b"hello");
        assert_eq!(h.to_hex().parse::<ChunkHash>().unwrap(), h);
        assert!("zz".parse::<ChunkHash>().is_err());
        assert!(ChunkHash::from_slice(&[0; 31]).is_none());
    }
}

//! Tenant-scoped tokens: who a presented bearer is ([`Principal`]: a name, the resource
//! prefixes it may name, the capabilities it holds) and the keys a listener checks
//! ([`Keys`]: the shared token, which means every capability over every resource, and a
//! tokens file of scoped entries).
//!
//! The tokens file (`--tokens FILE`, TOML) holds no secret, only each token's BLAKE3 hash:
//!
//! ```toml
//! [[token]]
//! name = "acme"                 # the tenant: in logs and refusals
//! hash = "<64 hex digits>"      # BLAKE3 of the secret (`prewarm token new` prints both)
//! prefixes = ["tenants/acme/"]  # resource ids it may name, segment-wise; ["*"]: every one
//! caps = ["ensure", "events"]   # of ensure, events, transfer, admin
//! ```
//!
//! A presented secret is hashed and looked up (an unpredictable 32-byte digest: a map
//! lookup leaks nothing of a secret through its timing); the shared token is compared in
//! constant time. An entry wins over the shared token when both would match.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prewarm_core::{ResourceId, Scope, ScopeError};
use serde::Deserialize;

use crate::auth::{Token, TokenError};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// The agent's API: `ensure` states, their leases, the inventory (within its prefixes).
    Ensure,
    /// `POST /v1/events` and `GET /v1/placement` (events naming states within its prefixes;
    /// the predictions made for them move nothing outside).
    Events,
    /// The control and data planes of agents (attach, reports, acknowledgements, history,
    /// chunks and manifests), operators' `transfer`, snapshot watchers.
    Transfer,
    /// The operator's views: `/metrics`, the dashboard, the full `status`. Only with every
    /// prefix (`["*"]`): those views name every tenant's states.
    Admin,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 4] = [
        Capability::Ensure,
        Capability::Events,
        Capability::Transfer,
        Capability::Admin,
    ];

    /// Its name in the tokens file.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Ensure => "ensure",
            Capability::Events => "events",
            Capability::Transfer => "transfer",
            Capability::Admin => "admin",
        }
    }

    /// The capability named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u8);

impl Capabilities {
    /// Every capability.
    pub const ALL: Capabilities = Capabilities(0b1111);

    /// The set of `caps`.
    pub fn of(caps: &[Capability]) -> Self {
        Capabilities(caps.iter().fold(0, |acc, c| acc | c.bit()))
    }

    /// Whether `c` is in the set.
    pub fn contains(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{self}]")
    }
}

impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = Capability::ALL
            .into_iter()
            .filter(|c| self.contains(*c))
            .map(Capability::name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Who made a request: the entry its token matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The entry's name (the tenant), or `shared` / `anonymous`.
    pub name: String,
    /// The resources it may name.
    pub scope: Scope,
    /// What it may do.
    pub caps: Capabilities,
}

/// Why an authenticated principal may not do something. The message names the principal,
/// the capability or the resource asked for, and never whether that resource exists.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Denied {
    /// It lacks the capability.
    #[error("token {name:?} lacks the {cap} capability")]
    Capability {
        /// The principal.
        name: String,
        /// What it lacks.
        cap: Capability,
    },
    /// The resource is outside its prefixes.
    #[error("token {name:?} may not name {resource}: it is outside the token's prefixes")]
    Scope {
        /// The principal.
        name: String,
        /// The resource asked for.
        resource: String,
    },
}

impl Principal {
    /// Every capability over every resource, named `name` (the shared token; no token
    /// configured at all).
    pub fn full(name: &str) -> Self {
        Principal {
            name: name.to_owned(),
            scope: Scope::All,
            caps: Capabilities::ALL,
        }
    }

    /// Whether it holds `cap`.
    pub fn may(&self, cap: Capability) -> Result<(), Denied> {
        if self.caps.contains(cap) {
            Ok(())
        } else {
            Err(Denied::Capability {
                name: self.name.clone(),
                cap,
            })
        }
    }

    /// Whether it holds `cap` and may name `r`.
    pub fn may_name(&self, cap: Capability, r: &ResourceId) -> Result<(), Denied> {
        self.may(cap)?;
        if self.scope.admits(r) {
            Ok(())
        } else {
            Err(Denied::Scope {
                name: self.name.clone(),
                resource: r.to_string(),
            })
        }
    }

    /// Whether it may see every tenant's states (admin over every prefix).
    pub fn sees_all(&self) -> bool {
        self.caps.contains(Capability::Admin) && self.scope.is_all()
    }

    /// The scope to filter with: `None` when it admits everything.
    pub fn narrowing(&self) -> Option<&Scope> {
        (!self.scope.is_all()).then_some(&self.scope)
    }
}

/// Why a tokens file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// It could not be read.
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not TOML of the expected shape (an unknown or missing field included).
    #[error("tokens file {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with the line).
        message: String,
    },
    /// It lists no token.
    #[error("tokens file {path} lists no [[token]] entry")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// One entry is wrong.
    #[error("tokens file {path}, entry {index} ({name:?}): {problem}")]
    Entry {
        /// The file.
        path: PathBuf,
        /// The entry's position, from 1.
        index: usize,
        /// Its name as written.
        name: String,
        /// What is wrong.
        problem: Box<EntryProblem>,
    },
}

/// What is wrong with one entry of a tokens file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryProblem {
    /// The name is empty, too long or has characters other than ASCII letters, digits, `.`,
    /// `_` and `-`.
    #[error("the name must be 1 to 64 ASCII letters, digits, '.', '_' or '-'")]
    Name,
    /// The hash is not 64 hex digits.
    #[error(
        "hash must be the 64 hex digits of the secret's BLAKE3 hash (`prewarm token new` prints it), not the secret"
    )]
    Hash,
    /// The prefixes are wrong.
    #[error("prefixes: {0}")]
    Scope(#[from] ScopeError),
    /// A capability nobody knows.
    #[error("unknown capability {0:?} (known: ensure, events, transfer, admin)")]
    Capability(String),
    /// No capability.
    #[error("caps is empty: a token must hold at least one capability")]
    NoCapability,
    /// `admin` over some prefixes only.
    #[error(
        "admin needs prefixes = [\"*\"]: the views it opens (/metrics, the dashboard, the full status) name every tenant's states"
    )]
    AdminScoped,
    /// The same hash as an earlier entry.
    #[error("the same hash as entry {0}")]
    Duplicate(usize),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    #[serde(default)]
    token: Vec<EntryIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn {
    name: String,
    hash: String,
    prefixes: Vec<String>,
    caps: Vec<String>,
}

/// The entries of a tokens file, by their secrets' hashes.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
}

/// The BLAKE3 hash of `secret` as a tokens file holds it (64 lowercase hex digits).
pub fn token_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// A fresh secret: `pw_` and 64 hex digits of 32 bytes from the kernel's random source.
pub fn new_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(format!("pw_{}", hex::encode(b)))
}

impl Tokens {
    /// Reads and checks the tokens file at `path`.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks the text of a tokens file (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, TokensError> {
        let file: FileIn = toml::from_str(text).map_err(|e| TokensError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        if file.token.is_empty() {
            return Err(TokensError::Empty {
                path: path.to_owned(),
            });
        }
        let mut by_hash: HashMap<[u8; 32], (usize, Arc<Principal>)> = HashMap::new();
        for (i, e) in file.token.into_iter().enumerate() {
            let index = i + 1;
            let fail = |problem| TokensError::Entry {
                path: path.to_owned(),
                index,
                name: e.name.clone(),
                problem: Box::new(problem),
            };
            let (hash, p) = entry(&e).map_err(fail)?;
            if let Some((first, _)) = by_hash.get(&hash) {
                return Err(fail(EntryProblem::Duplicate(*first)));
            }
            by_hash.insert(hash, (index, Arc::new(p)));
        }
        Ok(Tokens {
            by_hash: by_hash.into_iter().map(|(h, (_, p))| (h, p)).collect(),
        })
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The entry whose hash is `secret`'s.
    pub fn lookup(&self, secret: &[u8]) -> Option<Arc<Principal>> {
        self.by_hash.get(blake3::hash(secret).as_bytes()).cloned()
    }
}

/// One entry checked: its hash and principal.
fn entry(e: &EntryIn) -> Result<([u8; 32], Principal), EntryProblem> {
    let name_ok = !e.name.is_empty()
        && e.name.len() <= 64
        && e.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(EntryProblem::Name);
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(e.hash.trim(), &mut hash).map_err(|_| EntryProblem::Hash)?;
    let scope = Scope::parse(&e.prefixes)?;
    let mut caps = Vec::with_capacity(e.caps.len());
    for c in &e.caps {
        caps.push(Capability::parse(c).ok_or_else(|| EntryProblem::Capability(c.clone()))?);
    }
    let caps = Capabilities::of(&caps);
    if caps.is_empty() {
        return Err(EntryProblem::NoCapability);
    }
    if caps.contains(Capability::Admin) && !scope.is_all() {
        return Err(EntryProblem::AdminScoped);
    }
    Ok((
        hash,
        Principal {
            name: e.name.clone(),
            scope,
            caps,
        },
    ))
}

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("missing or wrong bearer token")]
pub struct Unauthenticated;

/// What a listener accepts: the shared token (every capability, every resource) and the
/// entries of a tokens file. With neither, requests need no token (loopback listeners only:
/// [`Keys::require_for`]) and each is [`Principal::full`] `anonymous`.
#[derive(Clone, Debug)]
pub struct Keys {
    shared: Option<(Token, Arc<Principal>)>,
    tokens: Option<Tokens>,
    anonymous: Arc<Principal>,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::open()
    }
}

impl From<Option<Token>> for Keys {
    fn from(t: Option<Token>) -> Self {
        Keys::new(t, None)
    }
}

impl Keys {
    /// The shared token and the tokens file's entries, either or both.
    pub fn new(shared: Option<Token>, tokens: Option<Tokens>) -> Self {
        Keys {
            shared: shared.map(|t| (t, Arc::new(Principal::full("shared")))),
            tokens,
            anonymous: Arc::new(Principal::full("anonymous")),
        }
    }

    /// No token at all: every request is let in.
    pub fn open() -> Self {
        Keys::new(None, None)
    }

    /// Whether requests must present a token.
    pub fn required(&self) -> bool {
        self.shared.is_some() || self.tokens.is_some()
    }

    /// Whether a listener at `addr` may serve with these keys: anything on loopback; a token
    /// (shared or a file's) elsewhere.
    pub fn require_for(&self, addr: SocketAddr) -> Result<(), TokenError> {
        if addr.ip().is_loopback() || self.required() {
            Ok(())
        } else {
            Err(TokenError::Required(addr))
        }
    }

    /// Who presents `secret` (`None` or empty: no token).
    pub fn authenticate(&self, secret: Option<&[u8]>) -> Result<Arc<Principal>, Unauthenticated> {
        if !self.required() {
            return Ok(self.anonymous.clone());
        }
        let secret = secret.filter(|s| !s.is_empty()).ok_or(Unauthenticated)?;
        if let Some(p) = self.tokens.as_ref().and_then(|t| t.lookup(secret)) {
            return Ok(p);
        }
        match &self.shared {
            Some((t, p)) if t.matches(secret) => Ok(p.clone()),
            _ => Err(Unauthenticated),
        }
    }

    /// Who presents `header` (an `authorization` value: `Bearer <secret>`).
    pub fn authenticate_bearer(
        &self,
        header: Option<&[u8]>,
    ) -> Result<Arc<Principal>, Unauthenticated> {
        if !self.required() {
            return Ok(self.anonymous.clone());
        }
        self.authenticate(header.and_then(|h| h.strip_prefix(b"Bearer ")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn file(entries: &str) -> Result<Tokens, TokensError> {
        Tokens::parse(entries, Path::new("tokens.toml"))
    }

    fn entry_toml(name: &str, secret: &str, prefixes: &str, caps: &str) -> String {
        format!(
            "[[token]]\nname = {name:?}\nhash = {:?}\nprefixes = {prefixes}\ncaps = {caps}\n",
            token_hash(secret)
        )
    }

    #[test]
    fn entries_authenticate_by_hash_and_the_shared_token_keeps_every_right() {
        let text = [
            entry_toml(
                "acme",
                "acme-secret-0123456789",
                r#"["tenants/acme/"]"#,
                r#"["ensure", "events"]"#,
            ),
            entry_toml(
                "agents",
                "agent-secret-0123456789",
                r#"["*"]"#,
                r#"["transfer"]"#,
            ),
        ]
        .concat();
        let tokens = file(&text).unwrap();
        assert_eq!(tokens.len(), 2);
        let shared = Token::new("shared-secret-0123456789").unwrap();
        let keys = Keys::new(Some(shared), Some(tokens));
        let acme = keys
            .authenticate_bearer(Some(b"Bearer acme-secret-0123456789"))
            .unwrap();
        assert_eq!(acme.name, "acme");
        let r = |s: &str| ResourceId::new(s).unwrap();
        assert!(
            acme.may_name(Capability::Ensure, &r("tenants/acme/x"))
                .is_ok()
        );
        assert_eq!(
            acme.may_name(Capability::Ensure, &r("tenants/beta/x")),
            Err(Denied::Scope {
                name: "acme".into(),
                resource: "tenants/beta/x".into()
            })
        );
        assert!(matches!(
            acme.may(Capability::Transfer),
            Err(Denied::Capability { .. })
        ));
        assert!(!acme.sees_all() && acme.narrowing().is_some());
        let agents = keys.authenticate(Some(b"agent-secret-0123456789")).unwrap();
        assert!(
            agents.may(Capability::Transfer).is_ok() && agents.may(Capability::Ensure).is_err()
        );
        let shared = keys
            .authenticate_bearer(Some(b"Bearer shared-secret-0123456789"))
            .unwrap();
        assert!(shared.sees_all() && shared.narrowing().is_none());
        assert_eq!(shared.caps, Capabilities::ALL);
        for bad in [
            None,
            Some(&b"Bearer "[..]),
            Some(b"acme-secret-0123456789"),
            Some(b"Bearer acme-secret-012345678"),
            Some(b"Bearer shared-secret-012345678X"),
        ] {
            assert_eq!(
                keys.authenticate_bearer(bad),
                Err(Unauthenticated),
                "{bad:?}"
            );
        }
        // Nothing configured: everyone is let in, with every right, on loopback only.
        let open = Keys::open();
        assert_eq!(open.authenticate_bearer(None).unwrap().name, "anonymous");
        assert!(open.require_for("0.0.0.0:1".parse().unwrap()).is_err());
        assert!(open.require_for("127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(keys.require_for("0.0.0.0:1".parse().unwrap()).is_ok());
    }

    #[test]
    fn malformed_entries_are_refused_naming_the_entry_and_the_problem() {
        let ok = entry_toml(
            "acme",
            "s-0123456789abcdef",
            r#"["tenants/acme/"]"#,
            r#"["ensure"]"#,
        );
        let problem = |text: String| match file(&text) {
            Err(TokensError::Entry { index, problem, .. }) => (index, *problem),
            other => panic!("{other:?}"),
        };
        let two = |second: String| format!("{ok}{second}");
        assert_eq!(
            problem(two(entry_toml(
                "b",
                "t-0123456789abcdef",
                "[]",
                r#"["ensure"]"#
            ))),
            (2, EntryProblem::Scope(ScopeError::Empty))
        );
        assert!(matches!(
            problem(two(entry_toml(
                "b",
                "t-0123456789abcdef",
                r#"["../x"]"#,
                r#"["ensure"]"#
            ))),
            (2, EntryProblem::Scope(ScopeError::Invalid { .. }))
        ));
        assert_eq!(
            problem(two(entry_toml(
                "b",
                "t-0123456789abcdef",
                r#"["*"]"#,
                r#"["read"]"#
            ))),
            (2, EntryProblem::Capability("read".into()))
        );
        assert_eq!(
            problem(two(entry_toml("b", "t-0123456789abcdef", r#"["*"]"#, "[]"))),
            (2, EntryProblem::NoCapability)
        );
        assert_eq!(
            problem(two(entry_toml(
                "b",
                "t-0123456789abcdef",
                r#"["t/b/"]"#,
                r#"["admin"]"#
            ))),
            (2, EntryProblem::AdminScoped)
        );
        assert_eq!(
            problem(two(entry_toml(
                "b c",
                "t-0123456789abcdef",
                r#"["*"]"#,
                r#"["events"]"#
            ))),
            (2, EntryProblem::Name)
        );
        assert_eq!(
            problem(two(entry_toml(
                "again",
                "s-0123456789abcdef",
                r#"["*"]"#,
                r#"["events"]"#
            ))),
            (2, EntryProblem::Duplicate(1))
        );
        // The secret written where its hash belongs.
        assert_eq!(
            problem(
                "[[token]]\nname = \"a\"\nhash = \"s-0123456789abcdef\"\nprefixes = [\"*\"]\ncaps = [\"events\"]\n"
                    .into()
            ),
            (1, EntryProblem::Hash)
        );
        let e = file(&two("[[token]]\nname = \"x\"\n".into())).unwrap_err();
        assert!(
            matches!(&e, TokensError::Syntax { message, .. } if message.contains("missing field")),
            "{e}"
        );
        let e = file(&format!("{ok}colour = 1\n")).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert!(matches!(file(""), Err(TokensError::Empty { .. })));
        let e = problem(two(entry_toml(
            "b",
            "t-0123456789abcdef",
            r#"["*"]"#,
            r#"["read"]"#,
        )));
        let msg = TokensError::Entry {
            path: "tokens.toml".into(),
            index: e.0,
            name: "b".into(),
            problem: Box::new(e.1),
        }
        .to_string();
        assert!(
            msg.contains("entry 2 (\"b\")") && msg.contains("\"read\""),
            "{msg}"
        );
    }

    #[test]
    fn fresh_secrets_are_distinct_strong_tokens() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        assert!(Token::new(&a).is_ok() && a.len() == 67, "{a}");
        assert_eq!(token_hash(&a).len(), 64);
    }
}

//! Which resources a principal (a tenant's token) may name: every one, or those under a
//! list of prefixes. A prefix is a resource id matched segment by segment: `tenants/acme`
//! (or `tenants/acme/`) admits `tenants/acme` itself and every id under `tenants/acme/`, and
//! never `tenants/acme-evil/x`. The engine filters an event's candidate states by it; the
//! agent and the coordinator check requests against it.

use crate::ids::{IdError, ResourceId};

/// Resources a principal may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every resource (`"*"`).
    All,
    /// Those at or under one of these ids (never empty).
    Prefixes(Vec<ResourceId>),
}

/// Why a prefix list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    /// No prefix at all: such a token could name nothing (`["*"]` means every resource).
    #[error("no prefixes: list at least one (\"*\" for every resource)")]
    Empty,
    /// A prefix that is not a resource id (after one trailing `/` is dropped).
    #[error("prefix {prefix:?}: {source}")]
    Invalid {
        /// The prefix as given.
        prefix: String,
        /// Why.
        source: IdError,
    },
}

impl Scope {
    /// The scope of `prefixes` as written in a tokens file: `"*"` anywhere means every
    /// resource; otherwise each is a resource id, with or without one trailing `/`.
    pub fn parse<S: AsRef<str>>(prefixes: &[S]) -> Result<Self, ScopeError> {
        if prefixes.is_empty() {
            return Err(ScopeError::Empty);
        }
        if prefixes.iter().any(|p| p.as_ref() == "*") {
            return Ok(Scope::All);
        }
        let mut out = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            let p = p.as_ref();
            let id = ResourceId::new(p.strip_suffix('/').unwrap_or(p)).map_err(|source| {
                ScopeError::Invalid {
                    prefix: p.to_owned(),
                    source,
                }
            })?;
            if !out.contains(&id) {
                out.push(id);
            }
        }
        Ok(Scope::Prefixes(out))
    }

    /// Whether `r` is inside the scope.
    pub fn admits(&self, r: &ResourceId) -> bool {
        match self {
            Scope::All => true,
            Scope::Prefixes(ps) => ps.iter().any(|p| {
                let (r, p) = (r.as_str(), p.as_str());
                r.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }),
        }
    }

    /// Whether every resource is inside.
    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::Prefixes(ps) => {
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p}/")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(s: &str) -> ResourceId {
        ResourceId::new(s).unwrap()
    }

    #[test]
    fn prefixes_match_whole_segments_and_star_means_all() {
        let s = Scope::parse(&["tenants/acme/", "shared/models"]).unwrap();
        for (r, ok) in [
            ("tenants/acme/x", true),
            ("tenants/acme/a/b", true),
            ("tenants/acme", true),
            ("tenants/acme-evil/x", false),
            ("tenants/acmex", false),
            ("tenants/beta/x", false),
            ("tenants", false),
            ("shared/models/m", true),
            ("shared/modelsx", false),
        ] {
            assert_eq!(s.admits(&id(r)), ok, "{r}");
        }
        assert_eq!(s.to_string(), "tenants/acme/, shared/models/");
        let all = Scope::parse(&["tenants/acme/", "*"]).unwrap();
        assert!(all.is_all() && all.admits(&id("anything/at/all")));
        assert_eq!(Scope::parse::<&str>(&[]), Err(ScopeError::Empty));
        for bad in ["../x", "/abs", "a//b", "", "a b"] {
            assert!(
                matches!(Scope::parse(&[bad]), Err(ScopeError::Invalid { .. })),
                "{bad:?}"
            );
        }
        // Repeats are kept once.
        assert_eq!(
            Scope::parse(&["a/", "a"]).unwrap(),
            Scope::Prefixes(vec![id("a")])
        );
    }
}

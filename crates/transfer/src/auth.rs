//! The shared token. Every listener bound to a non-loopback address requires it (gRPC
//! metadata `authorization: Bearer <token>`, HTTP header of the same name, the data plane's
//! `HELLO`); loopback listeners accept requests without one. Compared in constant time.
//! Tenant-scoped tokens (a tokens file of hashed entries, each with resource prefixes and
//! capabilities) sit beside it: see [`crate::tokens`].

use std::net::SocketAddr;
use std::path::Path;

/// Environment variable holding the token.
pub const TOKEN_ENV: &str = "PREWARM_TOKEN";
/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// A shared secret.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read token file {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Too short or not printable.
    #[error("the token must be at least {MIN_TOKEN_LEN} printable ASCII characters")]
    Weak,
    /// A listener is not on loopback and no token was given.
    #[error("{0} is not a loopback address: give a token with --token-file or {TOKEN_ENV}")]
    Required(SocketAddr),
}

impl Token {
    /// Checks and wraps a token string (surrounding whitespace is dropped).
    pub fn new(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        if s.len() < MIN_TOKEN_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Weak);
        }
        Ok(Token(s.to_owned()))
    }

    /// Reads the token from `file` if given, else from [`TOKEN_ENV`]; `None` when neither.
    pub fn load(file: Option<&Path>) -> Result<Option<Self>, TokenError> {
        if let Some(path) = file {
            let s = std::fs::read_to_string(path).map_err(|source| TokenError::File {
                path: path.to_owned(),
                source,
            })?;
            return Token::new(&s).map(Some);
        }
        match std::env::var(TOKEN_ENV) {
            Ok(s) if !s.is_empty() => Token::new(&s).map(Some),
            _ => Ok(None),
        }
    }

    /// The secret, for sending.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented secret.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let a = self.0.as_bytes();
        if a.len() != presented.len() {
            return false;
        }
        a.iter()
            .zip(presented)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    /// Whether `header` (an `authorization` value) carries this token.
    pub fn matches_bearer(&self, header: Option<&[u8]>) -> bool {
        header
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .is_some_and(|t| self.matches(t))
    }
}

/// What a listener at `addr` requires: the token when not on loopback (an error when there
/// is none), nothing on loopback.
pub fn listener_policy(
    addr: SocketAddr,
    token: Option<&Token>,
) -> Result<Option<Token>, TokenError> {
    if addr.ip().is_loopback() {
        Ok(token.cloned())
    } else {
        token.cloned().map(Some).ok_or(TokenError::Required(addr))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tokens_compare_and_policies_apply() {
        assert!(matches!(Token::new("short"), Err(TokenError::Weak)));
        let t = Token::new(" 0123456789abcdef\n").unwrap();
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeg"));
        assert!(!t.matches(b"0123456789abcde"));
        assert!(t.matches_bearer(Some(b"Bearer 0123456789abcdef")));
        assert!(!t.matches_bearer(Some(b"0123456789abcdef")));
        assert!(!t.matches_bearer(None));
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(listener_policy(lo, None).unwrap().is_none());
        assert!(matches!(
            listener_policy(any, None),
            Err(TokenError::Required(_))
        ));
        assert!(listener_policy(any, Some(&t)).unwrap().is_some());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}

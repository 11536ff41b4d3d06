//! TLS and mutual TLS for prewarm's TCP listeners (the coordinator's gRPC + JSON port and
//! its data plane, the agent's API) and for the connections to them (issue 13 §4: "mTLS
//! with rustls as an option").
//!
//! Everything is loaded from PEM files at start and refused there with the file and the
//! problem ([`TlsError`]): a listener given a certificate and key serves TLS only; given a
//! client CA as well it requires every client to present a certificate that CA signed
//! (mutual TLS), before a byte of HTTP or data-plane traffic is read. A client given a CA
//! verifies the server's certificate against it (by the host name or IP address it dials,
//! or a name set with [`ClientSettings::server_name`]) and, given a certificate and key of its
//! own, presents them. rustls with the `ring` provider, which the NATS client already builds:
//! TLS 1.3 and 1.2, no other crypto library.
//!
//! The shared token and tenant tokens are checked as before inside the TLS session: TLS
//! authenticates the machine, tokens the principal and its scope.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

/// A TLS stream a server accepted.
pub type ServerStream<IO> = tokio_rustls::server::TlsStream<IO>;
/// A TLS stream a client opened.
pub type ClientStream<IO> = tokio_rustls::client::TlsStream<IO>;

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no valid PEM of the kind needed.
    #[error("{what} {path}: {why}")]
    File {
        /// What the file was for ("certificate", "private key", "CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The problem.
        why: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, a CA
    /// that is not a CA certificate).
    #[error("TLS settings: {0}")]
    Config(String),
}

/// What a listener serves TLS with.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Its certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA (PEM, one or more) signed.
    pub client_ca: Option<PathBuf>,
}

/// What a client verifies servers with, and the identity it presents.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The CA (PEM, one or more certificates) the server's certificate must chain to.
    pub ca: PathBuf,
    /// The client's certificate chain and key, presented to servers that ask.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name checked against the server's certificate in place of the host dialled.
    pub server_name: Option<String>,
}

/// Accepts TLS (and, when configured, verified client certificates) on a listener.
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
    mutual: bool,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("mutual", &self.mutual)
            .finish()
    }
}

impl Acceptor {
    /// Loads `s` (ALPN: `h2`, `http/1.1`; clients that offer none are served too).
    pub fn load(s: &ServerSettings) -> Result<Self, TlsError> {
        let (certs, key) = identity(&s.cert, &s.key)?;
        let p = provider();
        let builder = rustls::ServerConfig::builder_with_provider(p.clone())
            .with_safe_default_protocol_versions()
            .map_err(config)?;
        let builder = match &s.client_ca {
            Some(ca) => {
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), p)
                    .build()
                    .map_err(|e| TlsError::Config(format!("client CA {}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_single_cert(certs, key).map_err(config)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
            mutual: s.client_ca.is_some(),
        })
    }

    /// Whether clients must present a verified certificate.
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    /// Runs the server side of the handshake on `io`.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<ServerStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.inner.accept(io).await
    }
}

/// Opens TLS connections to prewarm's listeners.
#[derive(Clone)]
pub struct Connector {
    plain: tokio_rustls::TlsConnector,
    h2: tokio_rustls::TlsConnector,
    name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server_name", &self.name)
            .finish()
    }
}

impl Connector {
    /// Loads `s`.
    pub fn load(s: &ClientSettings) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_root_certificates(roots(&s.ca)?);
        let cfg = match &s.identity {
            Some((cert, key)) => {
                let (certs, key) = identity(cert, key)?;
                builder.with_client_auth_cert(certs, key).map_err(config)?
            }
            None => builder.with_no_client_auth(),
        };
        let mut h2 = cfg.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        let name = match &s.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| TlsError::Config(format!("server name {n:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(Self {
            plain: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            h2: tokio_rustls::TlsConnector::from(Arc::new(h2)),
            name,
        })
    }

    /// Runs the client side of the handshake on `io` to `host` (a DNS name or an IP
    /// address, checked against the server's certificate unless a name was set).
    pub async fn connect<IO>(&self, host: &str, io: IO) -> io::Result<ClientStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.plain.connect(self.name_for(host)?, io).await
    }

    /// [`Connector::connect`] offering HTTP/2 by ALPN (for gRPC).
    pub async fn connect_h2<IO>(&self, host: &str, io: IO) -> io::Result<ClientStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.h2.connect(self.name_for(host)?, io).await
    }

    fn name_for(&self, host: &str) -> io::Result<ServerName<'static>> {
        if let Some(n) = &self.name {
            return Ok(n.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a name TLS can verify: {e}"),
            )
        })
    }
}

/// The host of a `host:port` address (`[v6]:port` gives `[v6]`): what a client dials, and
/// the name [`Connector::connect`] checks unless one was set.
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config(e: rustls::Error) -> TlsError {
    TlsError::Config(e.to_string())
}

fn file_err(what: &'static str, path: &Path, why: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        why: why.to_string(),
    }
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(what, path, e))?;
    if certs.is_empty() {
        return Err(file_err(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certs("certificate", cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err("private key", key, e))?;
    Ok((chain, key))
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs("CA", ca)? {
        roots.add(c).map_err(|e| file_err("CA", ca, e))?;
    }
    Ok(roots)
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

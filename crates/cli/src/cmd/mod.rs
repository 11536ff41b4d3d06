//! One module per subcommand, plus the arguments they share.

pub mod agent;
pub mod bench;
pub mod completions;
pub mod coordinator;
pub mod demo;
pub mod eval;
pub mod gc;
pub mod generate;
pub mod import;
pub mod repair;
pub mod replay;
pub mod restore;
pub mod snapshot;
pub mod status;
pub mod token;
pub mod train;
pub mod transfer;
pub mod verify;
pub mod versions;
pub mod watch;
pub mod watch_link;

use std::sync::Arc;

use anyhow::Context;
use prewarm_core::{HistoryRecord, ResourceId};
use prewarm_store::Store;

/// `--store` and `--resource`, shared by most commands.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArg {
    /// Store location: a directory, file:///dir, memory://, or s3:// gs:// az:// (with features).
    #[arg(long, value_name = "DIR|URL")]
    pub store: String,
    /// Do not fsync objects written to a local store: faster on slow disks, but a snapshot
    /// reported committed may be lost in a power cut (never left inconsistent by a crash).
    #[arg(long)]
    pub no_fsync: bool,
}

impl StoreArg {
    /// Opens an existing store.
    pub async fn open(&self) -> anyhow::Result<Arc<Store>> {
        Ok(Arc::new(
            Store::open(&self.store)
                .await
                .context("opening the store")?,
        ))
    }

    /// Opens the store, creating it if missing.
    pub async fn open_or_create(&self) -> anyhow::Result<Arc<Store>> {
        Ok(Arc::new(
            Store::open_or_create(&self.store)
                .await
                .context("opening the store")?,
        ))
    }
}

/// `--chunk-size`, shared by the commands that take snapshots.
#[derive(clap::Args, Clone, Debug)]
pub struct ChunkArg {
    /// Average chunk size (the transfer granularity), 1KiB-4MiB.
    #[arg(long = "chunk-size", value_name = "SIZE", value_parser = parse_size, default_value_t = u64::from(prewarm_store::DEFAULT_AVG_CHUNK))]
    pub avg: u64,
}

impl ChunkArg {
    /// The chunker parameters, validated.
    pub fn params(&self) -> anyhow::Result<prewarm_store::ChunkerParams> {
        let avg = u32::try_from(self.avg).unwrap_or(u32::MAX);
        prewarm_store::ChunkerParams::with_avg(avg).map_err(anyhow::Error::msg)
    }
}

/// Parses and validates a resource id for clap.
pub fn parse_resource(s: &str) -> Result<ResourceId, String> {
    ResourceId::new(s).map_err(|e| e.to_string())
}

/// Parses a byte size for clap.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<prewarm_core::ByteSize>()
        .map(|b| b.0)
        .map_err(|e| e.to_string())
}

/// Parses a duration for clap.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    prewarm_core::parse_duration(s).map_err(|e| e.to_string())
}

/// Reads a whole history file, refusing an empty one or one out of time order.
pub fn read_history(path: &std::path::Path) -> anyhow::Result<Vec<HistoryRecord>> {
    Ok(prewarm_import::read_history(path)?)
}

/// Bounds of an HTTP port against slow, idle and too many clients (`prewarm-http`).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct HttpLimitsArg {
    /// Connections the HTTP port serves at once (beyond, new ones wait).
    #[arg(long, default_value_t = 1024)]
    pub http_max_connections: usize,
    /// Time for a request's headers, from its first byte.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub http_header_timeout: std::time::Duration,
    /// Time for a whole (non-gRPC) request body, from its first read.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub http_body_timeout: std::time::Duration,
    /// Time a connection may sit idle with no request in flight.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub http_idle_timeout: std::time::Duration,
}

impl HttpLimitsArg {
    /// The limits, refusing zero values.
    pub fn limits(&self) -> anyhow::Result<prewarm_http::Limits> {
        anyhow::ensure!(
            self.http_max_connections > 0
                && !self.http_header_timeout.is_zero()
                && !self.http_body_timeout.is_zero()
                && !self.http_idle_timeout.is_zero(),
            "--http-max-connections and the --http-*-timeout flags must be positive"
        );
        Ok(prewarm_http::Limits {
            max_connections: self.http_max_connections,
            header_timeout: self.http_header_timeout,
            body_timeout: self.http_body_timeout,
            idle_timeout: self.http_idle_timeout,
        })
    }
}

/// `--token-file`, shared by the networked commands.
#[derive(clap::Args, Clone, Debug)]
pub struct TokenArg {
    /// File holding the shared token (else the PREWARM_TOKEN environment variable). Required
    /// by every listener bound to a non-loopback address.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

impl TokenArg {
    /// The token, if any.
    pub fn load(&self) -> anyhow::Result<Option<prewarm_transfer::Token>> {
        Ok(prewarm_transfer::Token::load(self.token_file.as_deref())?)
    }
}

/// `--tls-*`: TLS on this process's TCP listeners and on its connections to a coordinator.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArg {
    /// Certificate chain (PEM, leaf first) this process presents: its TCP listeners (the
    /// coordinator's port and data plane, the agent's API) serve TLS only, and it is the client
    /// certificate shown to a coordinator that requires one.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require every client of this process's listeners to present a certificate this CA
    /// (PEM) signed: mutual TLS, checked before a byte of a request is read.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Connect to the coordinator over TLS (its URL https://), verifying its certificate
    /// against this CA (PEM); the data plane's TCP connections use TLS too.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name checked in the coordinator's certificate (default: the host dialled).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
}

impl TlsArg {
    /// The acceptor of this process's listeners, when --tls-cert is given.
    pub fn server(&self) -> anyhow::Result<Option<prewarm_tls::Acceptor>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Ok(Some(prewarm_tls::Acceptor::load(
            &prewarm_tls::ServerSettings {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            },
        )?))
    }

    /// How a listener with `tls` is described in the start line.
    pub fn label(tls: Option<&prewarm_tls::Acceptor>) -> &'static str {
        match tls {
            Some(t) if t.mutual() => " (mutual TLS)",
            Some(_) => " (TLS)",
            None => "",
        }
    }

    /// The connector to the coordinator, when --tls-ca is given (presenting --tls-cert).
    pub fn client(&self) -> anyhow::Result<Option<prewarm_tls::Connector>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let identity = self.tls_cert.clone().zip(self.tls_key.clone());
        Ok(Some(prewarm_tls::Connector::load(
            &prewarm_tls::ClientSettings {
                ca: ca.clone(),
                identity,
                server_name: self.tls_server_name.clone(),
            },
        )?))
    }
}

/// `--tokens`, on the commands that serve (coordinator, agent).
#[derive(clap::Args, Clone, Debug)]
pub struct TokensArg {
    /// A TOML file of tenant-scoped tokens accepted beside the shared token: each entry a
    /// name, the BLAKE3 hash of its secret, resource prefixes and capabilities (ensure,
    /// events, transfer, admin); `prewarm token new` makes entries. A malformed file stops
    /// the start.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<std::path::PathBuf>,
}

impl TokensArg {
    /// The file's entries, if a file was given.
    pub fn load(&self) -> anyhow::Result<Option<prewarm_transfer::Tokens>> {
        Ok(self
            .tokens
            .as_deref()
            .map(prewarm_transfer::Tokens::load)
            .transpose()?)
    }
}

/// `--config` and `--print-config` of the long-running commands (both are acted on by
/// [`crate::config`] around parsing, before the command runs).
#[derive(clap::Args, Clone, Debug)]
pub struct ConfigArg {
    /// A TOML file setting any of this command's flags by long name, e.g. `cache-size =
    /// "10GiB"` (the command line and PREWARM_<FLAG> environment variables override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Print the effective configuration (a file `--config` reads back) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `--coordinator` and `--token-file`, shared by the commands that call the coordinator.
#[derive(clap::Args, Clone, Debug)]
pub struct CoordinatorArg {
    /// The coordinator's gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:7100")]
    pub coordinator: String,
    #[command(flatten)]
    pub token: TokenArg,
    #[command(flatten)]
    pub tls: TlsArg,
}

impl CoordinatorArg {
    /// A control-plane client (with the token, if any; over TLS with --tls-ca).
    pub async fn connect(&self) -> anyhow::Result<prewarm_agent::control::Client> {
        let token = self.token.load()?;
        let tls = self.tls.client()?;
        prewarm_agent::control::connect(&self.coordinator, token.as_ref(), tls.as_ref())
            .await
            .map_err(anyhow::Error::msg)
    }
}

//! The processes `bench transfer` measures: a coordinator and agents, each a child process
//! of the `prewarm` binary, and the control-plane calls made to them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prewarm_proto::wire::{
    Priority, StatusRequest, TransferAck, TransferRequest, VersionSpec, version_spec,
};

use super::TransferBenchError;
use crate::support::{Proc, utf8};

/// The control-plane client.
pub type Client = prewarm_agent::control::Client;

/// A free loopback port.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `exe args…` with stderr to `log`.
pub fn spawn(exe: &Path, args: &[&str], log: &Path) -> std::io::Result<Proc> {
    let f = std::fs::File::create(log)?;
    Ok(Proc(
        Command::new(exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()?,
    ))
}

/// A running coordinator and what agents need to reach it.
pub struct Cluster {
    /// The coordinator process.
    pub _coordinator: Proc,
    /// A control-plane client of it.
    pub client: Client,
    /// Its gRPC URL.
    pub url: String,
    /// Its data-plane TCP address.
    pub data_addr: String,
    /// Its same-host data-plane socket.
    pub sock: PathBuf,
    work: PathBuf,
    exe: PathBuf,
}

impl Cluster {
    /// Starts a coordinator serving `store_dir` and connects to it.
    pub async fn start(
        exe: &Path,
        work: &Path,
        store_dir: &Path,
    ) -> Result<Self, TransferBenchError> {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let sock = work.join("data.sock");
        let data_addr = format!("127.0.0.1:{}", free_port()?);
        let coordinator = spawn(
            exe,
            &[
                "coordinator",
                "--store",
                utf8(store_dir)?,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-listen",
                &data_addr,
                "--data-unix",
                utf8(&sock)?,
                "--poll",
                "1h",
            ],
            &work.join("coordinator.log"),
        )?;
        let t0 = Instant::now();
        let client = loop {
            match prewarm_agent::control::connect(&url, None, None).await {
                Ok(c) => break c,
                Err(_) if t0.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(TransferBenchError::Connect(e)),
            }
        };
        Ok(Self {
            _coordinator: coordinator,
            client,
            url,
            data_addr,
            sock,
            work: work.to_owned(),
            exe: exe.to_owned(),
        })
    }

    /// Starts agent `name` on data path `path` with an empty cache; returns the process,
    /// its HTTP API address and its cache directory.
    pub fn start_agent(
        &self,
        name: &str,
        path: &str,
    ) -> Result<(Proc, String, PathBuf), TransferBenchError> {
        let cache = self.work.join(format!("cache-{name}"));
        let _ = std::fs::remove_dir_all(&cache);
        let api = format!("127.0.0.1:{}", free_port()?);
        let p = spawn(
            &self.exe,
            &[
                "agent",
                "--coordinator",
                &self.url,
                "--name",
                name,
                "--cache-dir",
                utf8(&cache)?,
                "--cache-size",
                "64GiB",
                "--listen",
                &api,
                "--data-path",
                path,
            ],
            &self.work.join(format!("agent-{name}.log")),
        )?;
        Ok((p, api, cache))
    }

    /// Has `cap` load the latest `resource`; the acknowledgement and the seconds it took.
    pub async fn transfer(
        &mut self,
        cap: &str,
        resource: &str,
    ) -> Result<(TransferAck, f64), TransferBenchError> {
        let t0 = Instant::now();
        let ack = self
            .client
            .transfer(TransferRequest {
                capacity: cap.into(),
                resource: resource.into(),
                version: Some(VersionSpec {
                    spec: Some(version_spec::Spec::Latest(true)),
                }),
                priority: Priority::OnDemand as i32,
                timeout_ms: 0,
            })
            .await
            .map_err(|s| TransferBenchError::Rpc(s.message().to_owned()))?
            .into_inner();
        let secs = t0.elapsed().as_secs_f64();
        if !ack.ok {
            return Err(TransferBenchError::Transfer {
                what: format!("transfer of {resource} to {cap}"),
                error: ack.error,
            });
        }
        Ok((ack, secs))
    }

    /// Waits up to 30 s for `cap` to attach.
    pub async fn wait_attached(&mut self, cap: &str) -> Result<(), TransferBenchError> {
        let t0 = Instant::now();
        loop {
            let s = self
                .client
                .status(StatusRequest {})
                .await
                .map_err(|s| TransferBenchError::Rpc(s.message().to_owned()))?
                .into_inner();
            if s.capacities
                .iter()
                .any(|c| c.capacity == cap && c.connected)
            {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return Err(TransferBenchError::NotAttached(cap.to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

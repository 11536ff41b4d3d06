//! An S3-compatible server for the process tests: moto's standalone server (PyPI
//! `moto[server]`, which `.ci/run` installs), on a free loopback port, with one bucket; and
//! the `AWS_*` environment that points prewarm's processes at it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use super::{Proc, free_port, wait_until};

/// A running S3-compatible server with a bucket.
pub struct S3 {
    /// The server process (killed on drop).
    pub proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The bucket made for the test.
    pub bucket: String,
    /// Where the server logs its requests.
    pub log: tempfile::NamedTempFile,
}

impl S3 {
    /// The `AWS_*` variables that make `object_store` (and so `prewarm`) use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", "prewarm-test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "prewarm-test-secret".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Writes `body` at `key` behind prewarm's back (to damage an object), signed like any
    /// client's: moto refuses anonymous overwrites.
    pub fn put_raw(&self, key: &str, body: &[u8]) {
        use object_store::ObjectStoreExt;
        let env = self.env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
        // As in prewarm's store: reqwest is built to use rustls' ring provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(get("AWS_ENDPOINT_URL"))
            .with_allow_http(true)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(get("AWS_ACCESS_KEY_ID"))
            .with_secret_access_key(get("AWS_SECRET_ACCESS_KEY"))
            .with_region(get("AWS_REGION"))
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path = object_store::path::Path::from(key);
        rt.block_on(s3.put(&path, body.to_vec().into())).unwrap();
    }

    /// The requests served so far, one line each ("PUT /bucket/key?partNumber=1&… 200").
    pub fn requests(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    /// The size of object `key` (from a listing).
    pub fn size(&self, key: &str) -> usize {
        let (_, body) = self.exchange(
            "GET",
            &format!("/{}?list-type=2&prefix={key}", self.bucket),
            b"",
        );
        body.split_once("<Size>")
            .and_then(|(_, r)| r.split_once("</Size>"))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or_else(|| panic!("no object {key}: {body}"))
    }

    /// The keys under `prefix` (a plain ListObjectsV2, first page).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (_, body) = self.exchange(
            "GET",
            &format!("/{}?list-type=2&prefix={prefix}", self.bucket),
            b"",
        );
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> u16 {
        self.exchange(method, path, body).0
    }

    fn exchange(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let out = String::from_utf8_lossy(&out).into_owned();
        let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        (status, body)
    }
}

/// Starts moto's server with bucket `bucket`, or `None` (with a note) when `moto_server` is
/// not installed — except under CI, where `.ci/run` installs it and its absence is a failure.
pub fn s3_server(bucket: &str) -> Option<S3> {
    let found = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide moto_server (.ci/run installs moto[server])"
        );
        eprintln!("no moto_server on PATH (pip install 'moto[server]'): skipping");
        return None;
    }
    let port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let s3 = S3 {
        proc: Proc(child),
        port,
        bucket: bucket.to_owned(),
        log,
    };
    wait_until("the S3 server", 30, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let made = s3.request("PUT", &format!("/{bucket}"), b"");
    assert_eq!(made, 200, "creating bucket {bucket}");
    Some(s3)
}

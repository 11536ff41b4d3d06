//! [`Store`]: opening a store by path or URL, its object layout, versions and manifests.
//!
//! Layout inside the object store:
//! ```text
//! prewarm-store.json                  marker: format version (a store is refused without it)
//! data/<2 hex>/<pack id>              packs of stored chunks
//! index/<hash of body>                PackIndex objects: chunk → pack location
//! manifests/<resource>/@v/<version>   framed Manifest, version zero-padded to 20 digits
//! ```
//! `@` cannot occur in a resource id, so `a/@v/…` never collides with a resource `a/b`.

use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prewarm_core::{ChunkHash, ResourceId, StateRef, Version};

use crate::index::{ChunkIndex, IndexDecodeError};
use crate::manifest::{Manifest, ManifestError};
use crate::pack::{BlobLoc, PackId};
use crate::read::FetchError;

const MARKER: &str = "prewarm-store.json";
const STORE_FORMAT: u64 = 1;

/// Tunables of a store handle (not persisted: they only shape new writes).
#[derive(Clone, Copy, Debug)]
pub struct StoreConfig {
    /// zstd level for chunks.
    pub zstd_level: i32,
    /// Target pack size in bytes.
    pub pack_target: usize,
    /// fsync every object written to a local store before reporting it written. On by
    /// default: a snapshot reported committed survives a power cut. Off trades that for
    /// throughput on slow disks (the commit order still keeps manifests consistent after a
    /// process crash).
    pub fsync: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            zstd_level: crate::DEFAULT_ZSTD_LEVEL,
            pack_target: 16 << 20,
            fsync: true,
        }
    }
}

/// A content-addressed snapshot store.
pub struct Store {
    pub(crate) os: Arc<dyn ObjectStore>,
    /// Where packs go: like `os`, but a local store defers their fsync to `sync_packs`.
    pub(crate) bulk: Arc<dyn ObjectStore>,
    /// A local store's directory (where pack files can be opened directly).
    local_dir: Option<std::path::PathBuf>,
    /// A remote object store (S3, GCS, Azure): packs go up in parts (see [`put_pack`]) and
    /// other processes may open it (see [`Store::remote_location`]).
    pub(crate) remote: bool,
    /// Human-readable location, for messages.
    location: String,
    /// Everything the store holds, as of open or the last commit by this handle.
    pub(crate) index: RwLock<Arc<ChunkIndex>>,
    /// The index objects `index` was loaded from (see [`Store::refresh_index`]).
    pub(crate) index_seen: std::sync::Mutex<std::collections::HashSet<Path>>,
    /// Held by one refresh at a time (see [`Store::refresh_index`]).
    pub(crate) refreshing: tokio::sync::Mutex<()>,
    pub(crate) config: StoreConfig,
}

/// Why a store could not be opened or created.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The location is not a path or a URL we understand.
    #[error("invalid store location {location:?}: {why}")]
    BadLocation {
        /// What was given.
        location: String,
        /// Why it is invalid.
        why: String,
    },
    /// The URL's scheme needs a cargo feature this build lacks.
    #[error("store URL scheme {scheme:?} needs prewarm built with `--features {feature}`")]
    NotCompiled {
        /// The scheme.
        scheme: String,
        /// The feature to enable.
        feature: &'static str,
    },
    /// No marker: this is not a prewarm store (or it does not exist).
    #[error("{location} is not a prewarm store (no {MARKER}); `prewarm snapshot` creates one")]
    NotAStore {
        /// The location.
        location: String,
    },
    /// The marker names a format this build does not know.
    #[error("{location} has store format {found}; this build reads format {STORE_FORMAT}")]
    UnknownFormat {
        /// The location.
        location: String,
        /// The format found.
        found: String,
    },
    /// The backend failed (permissions, network, missing directory…).
    #[error("cannot read store {location}: {source}")]
    Backend {
        /// The location.
        location: String,
        /// The backend's error.
        source: object_store::Error,
    },
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadManifestError {
    /// No such version.
    #[error("{state} does not exist (latest version: {latest})")]
    UnknownVersion {
        /// What was asked for.
        state: StateRef,
        /// What exists, for the message.
        latest: String,
    },
    /// The resource has no versions at all.
    #[error("resource {0} has no versions in this store")]
    UnknownResource(ResourceId),
    /// The manifest object is damaged.
    #[error("manifest of {state} is damaged: {source}")]
    Corrupt {
        /// Which manifest.
        state: StateRef,
        /// What is wrong.
        source: ManifestError,
    },
    /// The backend failed.
    #[error("cannot read manifest: {0}")]
    Backend(#[from] object_store::Error),
}

impl Store {
    /// Opens an existing store: a directory path, `file:///dir`, `memory://`, or (with the
    /// matching feature) `s3://`, `gs://`, `az://` URLs configured from the environment.
    pub async fn open(location: &str) -> Result<Self, OpenError> {
        Self::open_with(location, StoreConfig::default(), false).await
    }

    /// Opens a store, creating it (and a local directory) if it does not exist.
    pub async fn open_or_create(location: &str) -> Result<Self, OpenError> {
        Self::open_with(location, StoreConfig::default(), true).await
    }

    /// A fresh in-memory store, for tests and simulations.
    pub async fn memory() -> Self {
        Self::open_or_create("memory://")
            .await
            .expect("in-memory store always opens")
    }

    /// Opens with explicit tunables; a remote store is configured from the environment
    /// (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_ALLOW_HTTP`…).
    pub async fn open_with(
        location: &str,
        config: StoreConfig,
        create: bool,
    ) -> Result<Self, OpenError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::open_with_env(location, config, create, env).await
    }

    /// [`Store::open_with`], a remote store configured from `env` instead of the process
    /// environment: `(name, value)` pairs such as `("AWS_ENDPOINT_URL", "http://…")`, names
    /// in any case, those that configure nothing ignored.
    pub async fn open_with_env(
        location: &str,
        config: StoreConfig,
        create: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, OpenError> {
        let b = backend(location, create, config.fsync, env)?;
        Self::open_backends(b, location, config, create).await
    }

    /// Opens (with `create`: creates) a store over an object store the caller built — a
    /// wrapper of its own (the fault simulation's, which fails, corrupts or truncates reads)
    /// or a backend with no URL here. `location` only names it in messages. Packs are read
    /// through `os` like a remote store's: no pack file is opened directly.
    pub async fn open_over(
        os: Arc<dyn ObjectStore>,
        location: &str,
        config: StoreConfig,
        create: bool,
    ) -> Result<Self, OpenError> {
        Self::open_backends(Backends::same(os), location, config, create).await
    }

    async fn open_backends(
        b: Backends,
        location: &str,
        config: StoreConfig,
        create: bool,
    ) -> Result<Self, OpenError> {
        let store = Self {
            os: b.meta,
            bulk: b.bulk,
            local_dir: b.local_dir,
            remote: b.remote,
            location: location.to_owned(),
            index: RwLock::new(Arc::new(ChunkIndex::default())),
            index_seen: Default::default(),
            refreshing: Default::default(),
            config,
        };
        store.check_marker(create).await?;
        let (idx, seen) = store.load_index_seen().await?;
        *store.index.write().expect("index lock poisoned") = Arc::new(idx);
        *store.index_seen.lock().expect("index lock poisoned") = seen;
        Ok(store)
    }

    /// The location this store was opened from.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Tunables of this handle.
    pub fn config(&self) -> StoreConfig {
        self.config
    }

    /// A snapshot of the chunk index.
    pub fn index(&self) -> Arc<ChunkIndex> {
        self.index.read().expect("index lock poisoned").clone()
    }

    pub(crate) fn backend_err(&self, source: object_store::Error) -> OpenError {
        OpenError::Backend {
            location: self.location.clone(),
            source,
        }
    }

    async fn check_marker(&self, create: bool) -> Result<(), OpenError> {
        let path = Path::from(MARKER);
        match self.os.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| self.backend_err(e))?;
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                match v.get("format").and_then(|f| f.as_u64()) {
                    Some(STORE_FORMAT) => Ok(()),
                    _ => Err(OpenError::UnknownFormat {
                        location: self.location.clone(),
                        found: String::from_utf8_lossy(&bytes).chars().take(80).collect(),
                    }),
                }
            }
            Err(object_store::Error::NotFound { .. }) if create => {
                let body = serde_json::json!({ "format": STORE_FORMAT, "created_by": "prewarm" });
                let put = self
                    .os
                    .put_opts(
                        &path,
                        PutPayload::from(body.to_string()),
                        object_store::PutMode::Create.into(),
                    )
                    .await;
                match put {
                    Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                    Err(e) => Err(self.backend_err(e)),
                }
            }
            Err(object_store::Error::NotFound { .. }) => Err(OpenError::NotAStore {
                location: self.location.clone(),
            }),
            Err(e) => Err(self.backend_err(e)),
        }
    }

    /// Lists and merges every index object; when one is damaged, the index is rebuilt
    /// from the packs' trailers instead ([`crate::repair`]) and the damage logged.
    pub(crate) async fn load_index(&self) -> Result<ChunkIndex, OpenError> {
        Ok(self.load_index_seen().await?.0)
    }

    /// Every index object that decodes, merged, and the ones that do not (with why).
    pub(crate) async fn load_index_parts(
        &self,
    ) -> Result<(ChunkIndex, Vec<(Path, IndexDecodeError)>), OpenError> {
        let paths = self
            .index_objects()
            .await
            .map_err(|e| self.backend_err(e))?;
        self.load_objects(ChunkIndex::default(), &paths).await
    }

    /// `idx` with the index objects `paths` merged in, and the ones that do not decode.
    pub(crate) async fn load_objects(
        &self,
        mut idx: ChunkIndex,
        paths: &[Path],
    ) -> Result<(ChunkIndex, Vec<(Path, IndexDecodeError)>), OpenError> {
        let mut damaged = Vec::new();
        for path in paths.iter().cloned() {
            let bytes = self
                .os
                .get(&path)
                .await
                .map_err(|e| self.backend_err(e))?
                .bytes()
                .await
                .map_err(|e| self.backend_err(e))?;
            match ChunkIndex::decode(&bytes) {
                Ok(part) => idx.merge(part),
                Err(e) => damaged.push((path, e)),
            }
        }
        Ok((idx, damaged))
    }

    pub(crate) async fn index_objects(&self) -> Result<Vec<Path>, object_store::Error> {
        let prefix = Path::from("index");
        let metas: Vec<_> = self.os.list(Some(&prefix)).try_collect().await?;
        Ok(metas.into_iter().map(|m| m.location).collect())
    }

    /// Versions of `resource`, oldest first.
    pub async fn versions(
        &self,
        resource: &ResourceId,
    ) -> Result<Vec<Version>, object_store::Error> {
        let prefix = versions_dir(resource);
        let listing = self.os.list_with_delimiter(Some(&prefix)).await?;
        let mut out: Vec<Version> = listing
            .objects
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()?
                    .parse::<u64>()
                    .ok()
                    .and_then(Version::new)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The newest version of `resource`, if any.
    pub async fn latest(
        &self,
        resource: &ResourceId,
    ) -> Result<Option<Version>, object_store::Error> {
        Ok(self.versions(resource).await?.pop())
    }

    /// Every resource with at least one version.
    pub async fn resources(&self) -> Result<Vec<ResourceId>, object_store::Error> {
        let prefix = Path::from("manifests");
        let metas: Vec<_> = self.os.list(Some(&prefix)).try_collect().await?;
        let mut out: Vec<ResourceId> = metas
            .iter()
            .filter_map(|m| {
                let parts: Vec<_> = m.location.parts().map(|p| p.as_ref().to_owned()).collect();
                let n = parts.len();
                (n >= 4 && parts[n - 2] == "@v")
                    .then(|| ResourceId::new(parts[1..n - 2].join("/")).ok())?
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Reads and validates one manifest (resolving a delta against its base chain).
    pub async fn manifest(&self, state: &StateRef) -> Result<Manifest, ReadManifestError> {
        self.manifest_in_chain(state, 0).await
    }

    fn manifest_in_chain<'a>(
        &'a self,
        state: &'a StateRef,
        depth: u32,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Manifest, ReadManifestError>> + Send + 'a>,
    > {
        Box::pin(async move {
            let corrupt = |source| ReadManifestError::Corrupt {
                state: state.clone(),
                source,
            };
            if depth > crate::manifest::MAX_READ_CHAIN {
                return Err(corrupt(ManifestError::Invalid(
                    "delta chain too long".into(),
                )));
            }
            let bytes = match self.os.get(&manifest_path(state)).await {
                Ok(r) => r.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(match self.latest(&state.resource).await? {
                        Some(latest) => ReadManifestError::UnknownVersion {
                            state: state.clone(),
                            latest: latest.to_string(),
                        },
                        None => ReadManifestError::UnknownResource(state.resource.clone()),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            let raw = Manifest::decode_raw(&bytes).map_err(corrupt)?;
            let base = match raw.base() {
                Some(b) if b.resource == state.resource && b.version < state.version => {
                    Some(self.manifest_in_chain(&b, depth + 1).await.map_err(|e| {
                        corrupt(ManifestError::Invalid(format!(
                            "its delta base {b} is unreadable: {e}"
                        )))
                    })?)
                }
                Some(b) => {
                    return Err(corrupt(ManifestError::Invalid(format!(
                        "delta base {b} is not an older version"
                    ))));
                }
                None => None,
            };
            let m = raw.resolve(base.as_ref()).map_err(corrupt)?;
            if &m.state != state {
                return Err(corrupt(ManifestError::Invalid(format!(
                    "it describes {} instead",
                    m.state
                ))));
            }
            Ok(m)
        })
    }

    /// Reads the manifest of `version`, or of the latest version when `None`.
    pub async fn resolve(
        &self,
        resource: &ResourceId,
        version: Option<Version>,
    ) -> Result<Manifest, ReadManifestError> {
        let version = match version {
            Some(v) => v,
            None => self
                .latest(resource)
                .await?
                .ok_or_else(|| ReadManifestError::UnknownResource(resource.clone()))?,
        };
        self.manifest(&StateRef {
            resource: resource.clone(),
            version,
        })
        .await
    }
}

impl Store {
    /// With durability on, the local directory whose pack files upload tasks flush.
    pub(crate) fn pack_sync_root(&self) -> Option<std::path::PathBuf> {
        self.local_dir.clone().filter(|_| self.config.fsync)
    }

    /// The location of a store in a remote object store (S3, GCS, Azure), which other
    /// processes with credentials can open too (`None` for a local or in-memory store).
    pub fn remote_location(&self) -> Option<&str> {
        self.remote.then_some(self.location.as_str())
    }

    /// The directory of a store in a local directory (`None` for other backends).
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref()
    }

    /// The file holding pack `id`, for a store in a local directory (`None` for other
    /// backends): lets a same-host reader open packs itself.
    pub fn pack_file(&self, id: &PackId) -> Option<std::path::PathBuf> {
        let dir = self.local_dir.as_ref()?;
        Some(dir.join(pack_path(id).as_ref()))
    }

    /// Where each chunk's stored bytes are, in the order given.
    pub fn locate(&self, hashes: &[ChunkHash]) -> Result<Vec<BlobLoc>, FetchError> {
        let index = self.index();
        hashes
            .iter()
            .map(|h| index.get(h).copied().ok_or(FetchError::Missing(*h)))
            .collect()
    }

    /// With durability on, flushes the directories that received new packs.
    pub(crate) async fn sync_pack_dirs(&self, packs: &[PackId]) -> Result<(), object_store::Error> {
        let Some(root) = self.pack_sync_root() else {
            return Ok(());
        };
        let mut dirs: std::collections::BTreeSet<_> = packs
            .iter()
            .map(|id| root.join("data").join(&id.to_hex()[..2]))
            .collect();
        dirs.insert(root.join("data"));
        blocking_io(move || {
            dirs.iter()
                .try_for_each(|d| std::fs::File::open(d)?.sync_all())
        })
        .await
    }
}

/// Flushes one pack file written through `bulk` (called by the upload task right after its
/// put, so flushes overlap with the CPU work instead of following it).
/// Parts of a pack uploaded to a remote store: over S3's 5 MiB minimum, and small enough that
/// a failed part costs one retry of 8 MiB rather than of the whole pack.
const PART: usize = 8 << 20;

/// Uploads one pack: a single put, or (with `multipart`, for a pack over one part) a
/// multipart upload whose parts go up concurrently and which is aborted if any part fails.
pub(crate) async fn put_pack(
    os: &Arc<dyn ObjectStore>,
    id: &PackId,
    bytes: Vec<u8>,
    multipart: bool,
) -> Result<(), object_store::Error> {
    use object_store::ObjectStoreExt;
    let path = pack_path(id);
    if !multipart || bytes.len() <= PART {
        return os
            .put(&path, object_store::PutPayload::from(bytes))
            .await
            .map(drop);
    }
    let upload = os.put_multipart(&path).await?;
    let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, PART);
    w.put(bytes::Bytes::from(bytes));
    w.finish().await.map(drop)
}

pub(crate) async fn sync_pack(
    root: Option<std::path::PathBuf>,
    id: PackId,
) -> Result<(), object_store::Error> {
    let Some(root) = root else {
        return Ok(());
    };
    blocking_io(move || std::fs::File::open(root.join(pack_path(&id).as_ref()))?.sync_all()).await
}

async fn blocking_io(
    f: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), object_store::Error> {
    let generic = |e: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
        store: "local",
        source: e,
    };
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| generic(e.into()))?
        .map_err(|e| generic(e.into()))
}

pub(crate) fn versions_dir(resource: &ResourceId) -> Path {
    Path::from_iter(
        ["manifests"]
            .into_iter()
            .chain(resource.segments())
            .chain(["@v"]),
    )
}

pub(crate) fn manifest_path(state: &StateRef) -> Path {
    versions_dir(&state.resource)
        .clone()
        .join(format!("{:020}", state.version.get()))
}

pub(crate) fn pack_path(id: &PackId) -> Path {
    let hex = id.to_hex();
    Path::from_iter(["data", &hex[..2], &hex])
}

pub(crate) fn pack_id_of(path: &Path) -> Option<PackId> {
    PackId::from_hex(path.filename()?)
}

/// The object stores behind a [`Store`].
struct Backends {
    /// Metadata objects: fsynced on write when durability is on.
    meta: Arc<dyn ObjectStore>,
    /// Packs: written without per-object fsync, flushed in one batch at commit.
    bulk: Arc<dyn ObjectStore>,
    /// The directory of a local store (for that batched flush and direct pack reads).
    local_dir: Option<std::path::PathBuf>,
    /// A remote object store.
    remote: bool,
}

impl Backends {
    fn same(os: Arc<dyn ObjectStore>) -> Self {
        Self {
            meta: os.clone(),
            bulk: os,
            local_dir: None,
            remote: false,
        }
    }

    fn remote(os: Arc<dyn ObjectStore>) -> Self {
        Self {
            remote: true,
            ..Self::same(os)
        }
    }
}

fn backend(
    location: &str,
    create: bool,
    fsync: bool,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Backends, OpenError> {
    let bad = |why: String| OpenError::BadLocation {
        location: location.to_owned(),
        why,
    };
    if location.is_empty() {
        return Err(bad("empty".into()));
    }
    let Some((scheme, _)) = location.split_once("://") else {
        return local(std::path::Path::new(location), create, fsync, location);
    };
    match scheme {
        "memory" => Ok(Backends::same(Arc::new(
            object_store::memory::InMemory::new(),
        ))),
        "file" => {
            let url = url::Url::parse(location).map_err(|e| bad(e.to_string()))?;
            let path = url
                .to_file_path()
                .map_err(|()| bad("not a local file URL".into()))?;
            local(&path, create, fsync, location)
        }
        "s3" | "s3a" => remote(location, "s3", cfg!(feature = "s3"), env).map(Backends::remote),
        "gs" => remote(location, "gcs", cfg!(feature = "gcs"), env).map(Backends::remote),
        "az" | "abfs" | "abfss" | "azure" => {
            remote(location, "azure", cfg!(feature = "azure"), env).map(Backends::remote)
        }
        other => Err(bad(format!(
            "unknown scheme {other:?} (use a path, file://, memory://, s3://, gs:// or az://)"
        ))),
    }
}

fn local(
    path: &std::path::Path,
    create: bool,
    fsync: bool,
    location: &str,
) -> Result<Backends, OpenError> {
    if create {
        std::fs::create_dir_all(path).map_err(|e| OpenError::BadLocation {
            location: location.to_owned(),
            why: format!("cannot create directory: {e}"),
        })?;
    } else if !path.is_dir() {
        return Err(OpenError::NotAStore {
            location: location.to_owned(),
        });
    }
    let open = |fsync: bool| {
        object_store::local::LocalFileSystem::new_with_prefix(path)
            .map(|fs| Arc::new(fs.with_fsync(fsync)) as Arc<dyn ObjectStore>)
            .map_err(|source| OpenError::Backend {
                location: location.to_owned(),
                source,
            })
    };
    Ok(Backends {
        meta: open(fsync)?,
        bulk: open(false)?,
        local_dir: Some(path.to_owned()),
        remote: false,
    })
}

#[allow(unused_variables)]
fn remote(
    location: &str,
    feature: &'static str,
    compiled: bool,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Arc<dyn ObjectStore>, OpenError> {
    let scheme = location.split("://").next().unwrap_or_default().to_owned();
    if !compiled {
        return Err(OpenError::NotCompiled { scheme, feature });
    }
    #[cfg(feature = "remote")]
    {
        // reqwest is built without a TLS provider of its own: rustls' ring provider, which
        // the rest of the build already uses, serves every HTTPS connection (an error here
        // only means one is already installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = url::Url::parse(location).map_err(|e| OpenError::BadLocation {
            location: location.to_owned(),
            why: e.to_string(),
        })?;
        // Only the provider's own variables (`AWS_…`, `GOOGLE_…`, `AZURE_…`), as its SDKs
        // read them: a bare `TOKEN` or `REGION` elsewhere in the environment configures
        // nothing.
        let prefix = match feature {
            "s3" => "aws_",
            "gcs" => "google_",
            _ => "azure_",
        };
        let opts = env
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .filter(|(k, _)| k.starts_with(prefix));
        let (store, prefix) =
            object_store::parse_url_opts(&url, opts).map_err(|source| OpenError::Backend {
                location: location.to_owned(),
                source,
            })?;
        let store: Arc<dyn ObjectStore> = Arc::from(store);
        return Ok(if prefix.as_ref().is_empty() {
            store
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        });
    }
    #[allow(unreachable_code)]
    Err(OpenError::NotCompiled { scheme, feature })
}

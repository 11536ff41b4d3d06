//! The committed truth: a few resources (buffers of mixed compressible and random bytes, a
//! directory tree with a symlink, optionally one state larger than a data-plane request)
//! written through the real snapshotter into a real store on disk, with small chunks and
//! packs so that a state spans many chunks and packs. The reference bytes of a version are a
//! restore of it from a clean store handle; states are compared by a digest of their tree.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use prewarm_core::{ResourceId, StateRef, Version};
use prewarm_snapshot::Snapshotter;
use prewarm_store::{ChunkerParams, Store, StoreConfig};

use crate::rng::Rng;

/// A digest of a state's bytes, names, kinds, modes and link targets.
pub type Digest = [u8; 32];

/// One resource and what it was committed as.
pub struct Res {
    /// Its id.
    pub id: ResourceId,
    /// Versions committed, oldest first.
    pub versions: Vec<Version>,
    /// Logical size of each version.
    pub sizes: HashMap<Version, u64>,
    /// The current contents: one buffer, or the files of a tree.
    files: BTreeMap<String, Vec<u8>>,
    tree: bool,
}

impl Res {
    /// The newest committed version.
    pub fn newest(&self) -> Version {
        *self.versions.last().expect("every resource has a version")
    }
}

/// The resources and the clean store handle that is the ground truth.
pub struct Catalog {
    /// The resources, in a fixed order (steps name them by index).
    pub res: Vec<Res>,
    truth: Arc<Store>,
    snap: Snapshotter,
    scratch: PathBuf,
    digests: HashMap<(ResourceId, Version), Digest>,
}

/// Mixed content of `base` bytes and up to `spread` more: 4 KiB blocks, random or a
/// repeated byte (so both codecs appear).
fn content(rng: &mut Rng, base: usize, spread: usize) -> Vec<u8> {
    let len = base + rng.index(spread.max(1));
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let n = (len - v.len()).min(4096);
        if rng.chance(500) {
            v.extend((0..n).map(|_| rng.next_u64() as u8));
        } else {
            v.extend(std::iter::repeat_n(rng.next_u64() as u8, n));
        }
    }
    v
}

/// A random edit: a region overwritten, bytes appended, or the tail cut.
fn edit(rng: &mut Rng, v: &mut Vec<u8>) {
    match rng.below(4) {
        0 => v.extend(content(rng, 1, 20_000)),
        1 if v.len() > 8192 => v.truncate(v.len() - rng.index(v.len() / 4)),
        _ => {
            let at = rng.index(v.len().max(1));
            let new = content(rng, 1, 16_384);
            let end = (at + new.len()).min(v.len());
            v.splice(at..end, new);
        }
    }
}

impl Catalog {
    /// Creates the store under `dir` and commits every resource's first versions.
    pub async fn build(dir: &Path, rng: &mut Rng) -> Result<Self, String> {
        let cfg = StoreConfig {
            pack_target: 64 << 10,
            fsync: false,
            ..StoreConfig::default()
        };
        let loc = dir.join("store");
        let truth = Store::open_with(loc.to_str().ok_or("path")?, cfg, true)
            .await
            .map_err(|e| e.to_string())?;
        let truth = Arc::new(truth);
        let chunker = ChunkerParams::with_avg(4096)?;
        let snap = Snapshotter::new(truth.clone())
            .with_chunker(chunker)
            .reread_all();
        let mut cat = Catalog {
            res: Vec::new(),
            truth,
            snap,
            scratch: dir.join("scratch"),
            digests: HashMap::new(),
        };
        let mut specs = vec![("s/a", 200_000, false), ("s/b", 60_000, false)];
        specs.push(("m/d", 40_000, false)); // `mark_stale` on every agent
        specs.push(("t/c", 0, true));
        if rng.chance(350) {
            specs.push(("s/big", 4_300_000, false)); // two data-plane requests
        }
        for (name, size, tree) in specs {
            let mut files = BTreeMap::new();
            if tree {
                for (f, n) in [
                    ("a.txt", 20_000),
                    ("sub/b.bin", 40_000),
                    ("sub/deep/c", 5000),
                ] {
                    files.insert(f.to_owned(), content(rng, n, n));
                }
                files.insert("empty".to_owned(), Vec::new());
            } else {
                files.insert(String::new(), content(rng, size, size / 4));
            }
            cat.res.push(Res {
                id: ResourceId::new(name).map_err(|e| e.to_string())?,
                versions: Vec::new(),
                sizes: HashMap::new(),
                files,
                tree,
            });
            let i = cat.res.len() - 1;
            cat.write(i).await?;
            for _ in 0..rng.below(3) {
                cat.commit(i, rng).await?;
            }
        }
        Ok(cat)
    }

    /// Edits resource `i` and commits the result as its next version.
    pub async fn commit(&mut self, i: usize, rng: &mut Rng) -> Result<Version, String> {
        let r = &mut self.res[i];
        let names: Vec<String> = r.files.keys().cloned().collect();
        let name = &names[rng.index(names.len())];
        let f = r.files.get_mut(name).expect("picked from the keys");
        edit(rng, f);
        if r.tree && rng.chance(300) {
            let n = format!("sub/new{}", rng.below(4));
            r.files.insert(n, content(rng, 0, 9000));
        }
        self.write(i).await
    }

    /// Commits resource `i`'s current contents.
    async fn write(&mut self, i: usize) -> Result<Version, String> {
        let r = &mut self.res[i];
        let out = if r.tree {
            let src = self.scratch.join("src");
            let _ = std::fs::remove_dir_all(&src);
            for (name, bytes) in &r.files {
                let p = src.join(name);
                std::fs::create_dir_all(p.parent().ok_or("parent")?).map_err(|e| e.to_string())?;
                std::fs::write(&p, bytes).map_err(|e| e.to_string())?;
            }
            std::os::unix::fs::symlink("a.txt", src.join("link")).map_err(|e| e.to_string())?;
            self.snap.snapshot_path(&r.id, &src).await
        } else {
            let bytes = Bytes::from(r.files[""].clone());
            self.snap.commit_bytes(&r.id, bytes).await
        };
        let out = out.map_err(|e| format!("commit {}: {e}", r.id))?;
        let v = out.committed.state.version;
        if !out.unchanged {
            let m = self.truth.resolve(&r.id, Some(v)).await;
            let m = m.map_err(|e| e.to_string())?;
            r.sizes.insert(v, m.logical_size);
            r.versions.push(v);
        }
        Ok(v)
    }

    /// The reference digest of `resource@version`: a restore from the clean store.
    pub async fn reference(&mut self, r: &ResourceId, v: Version) -> Result<Digest, String> {
        if let Some(d) = self.digests.get(&(r.clone(), v)) {
            return Ok(*d);
        }
        let state = StateRef {
            resource: r.clone(),
            version: v,
        };
        let m = self.truth.manifest(&state).await;
        let m = m.map_err(|e| format!("{r}@{v} is not committed: {e}"))?;
        let dest = self.scratch.join("ref");
        let _ = std::fs::remove_dir_all(&dest).or_else(|_| std::fs::remove_file(&dest));
        std::fs::create_dir_all(&self.scratch).map_err(|e| e.to_string())?;
        prewarm_snapshot::restore(self.truth.as_ref(), &m, &dest)
            .await
            .map_err(|e| format!("reference restore of {r}@{v}: {e}"))?;
        let d = digest(&dest).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&dest).or_else(|_| std::fs::remove_file(&dest));
        self.digests.insert((r.clone(), v), d);
        Ok(d)
    }
}

/// The digest of the file, link or tree at `p`: names, kinds, permission bits, contents
/// and link targets, children in name order.
pub fn digest(p: &Path) -> std::io::Result<Digest> {
    let mut h = blake3::Hasher::new();
    feed(&mut h, p)?;
    Ok(*h.finalize().as_bytes())
}

fn feed(h: &mut blake3::Hasher, p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(p)?;
    let mode = meta.permissions().mode() & 0o777;
    h.update(&mode.to_le_bytes());
    if meta.file_type().is_symlink() {
        h.update(b"L");
        h.update(std::fs::read_link(p)?.as_os_str().as_encoded_bytes());
    } else if meta.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        h.update(format!("D{}", names.len()).as_bytes());
        for n in names {
            h.update(n.as_encoded_bytes());
            h.update(b"/");
            feed(h, &p.join(n))?;
        }
    } else {
        let bytes = std::fs::read(p)?;
        h.update(format!("F{}", bytes.len()).as_bytes());
        h.update(&bytes);
    }
    Ok(())
}

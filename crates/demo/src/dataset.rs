//! Deterministic generated data sets for `bench` and `demo`: many files of mixed sizes, half
//! the bytes text-like records (compressible), half random (incompressible); and scattered
//! in-place edits that can be undone, so one data set serves several measurements.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// xorshift64*: fast, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (any seed).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A generated file: path and size.
#[derive(Clone, Debug)]
pub struct GenFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
}

const WORDS: &[&str] = &[
    "GET",
    "POST",
    "/api/v1/items",
    "/static/app.js",
    "user",
    "tenant",
    "status=200",
    "status=404",
    "latency_ms",
    "cache=hit",
    "cache=miss",
    "region=eu-west",
    "region=us-east",
    "model=resnet50",
    "batch",
    "tokens",
    "ok",
    "error",
    "timeout",
    "retry",
    "\"id\":",
    "\"name\":",
    "\"value\":",
    "true",
    "false",
    "null",
];

/// Fills `buf` with text-like log records (compresses ~3-5x with zstd).
pub fn text_fill(rng: &mut Rng, buf: &mut [u8]) {
    let mut i = 0;
    let mut line = Vec::with_capacity(256);
    while i < buf.len() {
        line.clear();
        let ts = 1_700_000_000 + rng.below(10_000_000);
        line.extend_from_slice(ts.to_string().as_bytes());
        for _ in 0..(4 + rng.below(8)) {
            line.push(b' ');
            line.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            if rng.below(3) == 0 {
                line.push(b'=');
                line.extend_from_slice(rng.below(100_000).to_string().as_bytes());
            }
        }
        line.push(b'\n');
        let n = line.len().min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&line[..n]);
        i += n;
    }
}

/// Writes about `total` bytes of files under `root` (created), deterministically from `seed`.
pub fn generate(root: &Path, total: u64, seed: u64) -> std::io::Result<Vec<GenFile>> {
    let mut rng = Rng::new(seed);
    let mut files = Vec::new();
    let mut written = 0u64;
    let mut buf = Vec::new();
    let mut n = 0u64;
    while written < total {
        // 80% small files (4-256 KiB), 20% large ones (1-32 MiB): many files, most bytes in few.
        let size = if rng.below(5) == 0 {
            (1 << 20) + rng.below(31 << 20)
        } else {
            4096 + rng.below(252 << 10)
        };
        let size = size.min(total - written).max(1);
        let dir = root.join(format!("d{:02}", n % 16));
        std::fs::create_dir_all(&dir)?;
        let compressible = rng.below(2) == 0;
        let path = dir.join(format!(
            "f{n:05}.{}",
            if compressible { "log" } else { "bin" }
        ));
        buf.resize(size as usize, 0);
        if compressible {
            text_fill(&mut rng, &mut buf);
        } else {
            rng.fill(&mut buf);
        }
        File::create(&path)?.write_all(&buf)?;
        files.push(GenFile { path, size });
        written += size;
        n += 1;
    }
    Ok(files)
}

/// One applied edit, with the bytes it replaced.
pub struct Edit {
    file: usize,
    offset: u64,
    old: Vec<u8>,
}

/// Overwrites `fraction` of all bytes in place, in `edit_size` pieces at random positions.
pub fn apply_edits(
    files: &[GenFile],
    fraction: f64,
    edit_size: u64,
    seed: u64,
) -> std::io::Result<Vec<Edit>> {
    let total: u64 = files.iter().map(|f| f.size).sum();
    let count = ((total as f64 * fraction) / edit_size as f64).round() as u64;
    let mut prefix = Vec::with_capacity(files.len());
    let mut acc = 0;
    for f in files {
        acc += f.size;
        prefix.push(acc);
    }
    let mut rng = Rng::new(seed);
    let mut edits = Vec::new();
    let mut data = vec![0u8; edit_size as usize];
    for _ in 0..count {
        let at = rng.below(total);
        let fi = prefix.partition_point(|&end| end <= at);
        let f = &files[fi];
        let len = edit_size.min(f.size);
        let offset = rng.below(f.size - len + 1);
        let file = File::options().read(true).write(true).open(&f.path)?;
        let mut old = vec![0u8; len as usize];
        file.read_exact_at(&mut old, offset)?;
        rng.fill(&mut data[..len as usize]);
        file.write_all_at(&data[..len as usize], offset)?;
        edits.push(Edit {
            file: fi,
            offset,
            old,
        });
    }
    Ok(edits)
}

/// Undoes edits (in reverse, so overlapping edits restore the original bytes).
pub fn undo_edits(files: &[GenFile], edits: &[Edit]) -> std::io::Result<()> {
    for e in edits.iter().rev() {
        let file = File::options().write(true).open(&files[e.file].path)?;
        file.write_all_at(&e.old, e.offset)?;
    }
    Ok(())
}

/// Total bytes of regular files under `root`.
pub fn du(root: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += du(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// BLAKE3 over every file's relative path and contents, in sorted order.
pub fn tree_digest(root: &Path) -> std::io::Result<String> {
    fn walk(root: &Path, dir: &Path, h: &mut blake3::Hasher) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).expect("under root");
            h.update(rel.as_os_str().as_encoded_bytes());
            if e.file_type()?.is_dir() {
                walk(root, &p, h)?;
            } else {
                h.update_reader(File::open(&p)?)?;
            }
        }
        Ok(())
    }
    let mut h = blake3::Hasher::new();
    walk(root, root, &mut h)?;
    Ok(h.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_sets_are_deterministic_and_edits_undo() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let fa = generate(a.path(), 600 << 10, 3).unwrap();
        generate(b.path(), 600 << 10, 3).unwrap();
        assert_eq!(fa.iter().map(|f| f.size).sum::<u64>(), 600 << 10);
        assert_eq!(du(a.path()), 600 << 10);
        let before = tree_digest(a.path()).unwrap();
        assert_eq!(before, tree_digest(b.path()).unwrap());
        let edits = apply_edits(&fa, 0.05, 4096, 7).unwrap();
        assert!(!edits.is_empty());
        assert_ne!(tree_digest(a.path()).unwrap(), before);
        undo_edits(&fa, &edits).unwrap();
        assert_eq!(tree_digest(a.path()).unwrap(), before);
    }
}

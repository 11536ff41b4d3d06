//! The raw TCP peer of `bench transfer`: a receiver process for a plain length-prefixed
//! stream (4-byte length, then up to 1 MiB of data; length 0 ends it), writing to a file (or
//! nowhere), answering one byte when everything is written. No verification, no chunking:
//! the ceiling prewarm's data plane is compared with.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

/// Frame size of the raw stream.
pub const FRAME: usize = 1 << 20;

/// Why the raw stream failed.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// A socket or file operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer sent a frame larger than [`FRAME`].
    #[error("frame of {0} bytes")]
    Frame(usize),
}

/// Receives on `listen` forever, one connection per run, writing each stream to a file
/// under `out` (none: discarding it); returns only on error.
pub fn recv(listen: SocketAddr, out: Option<&Path>) -> Result<std::convert::Infallible, RawError> {
    let l = TcpListener::bind(listen)?;
    let mut n = 0u64;
    loop {
        let (s, _) = l.accept()?;
        n += 1;
        let file: Option<PathBuf> = out.map(|d| d.join(format!("raw-{n}")));
        receive(s, file.as_deref())?;
    }
}

fn receive(mut s: TcpStream, out: Option<&Path>) -> Result<(), RawError> {
    let mut file = match out {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let mut buf = vec![0u8; FRAME];
    loop {
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 {
            break;
        }
        if len > FRAME {
            return Err(RawError::Frame(len));
        }
        s.read_exact(&mut buf[..len])?;
        if let Some(f) = file.as_mut() {
            f.write_all(&buf[..len])?;
        }
    }
    drop(file);
    if let Some(p) = out {
        std::fs::remove_file(p)?;
    }
    s.write_all(&[1])?;
    Ok(())
}

/// Sends `file` to a receiver at `addr`; returns once the receiver has written everything.
pub fn send(addr: SocketAddr, file: &Path) -> Result<(), RawError> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; FRAME + 4];
    loop {
        let n = read_full(&mut f, &mut buf[4..])?;
        buf[..4].copy_from_slice(&(n as u32).to_le_bytes());
        s.write_all(&buf[..4 + n])?;
        if n == 0 {
            break;
        }
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)?;
    Ok(())
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_arrives_whole() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, vec![7u8; FRAME + 123]).unwrap();
        let addr: SocketAddr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        std::thread::spawn(move || recv(addr, None));
        let mut tries = 0;
        while let Err(e) = send(addr, &src) {
            tries += 1;
            assert!(tries < 100, "{e}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

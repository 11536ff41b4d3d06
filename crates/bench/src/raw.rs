//! The raw TCP peer of `bench transfer`: a receiver process for a plain length-prefixed
//! stream (4-byte length, then up to 1 MiB of data; length 0 ends it), writing to a file (or
//! nowhere), answering one byte when everything is written. No verification, no chunking:
//! the ceiling prewarm's data plane is compared with.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

/// Arguments of the hidden `prewarm bench raw-recv`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to listen (one connection per run, until killed).
    #[arg(long)]
    listen: SocketAddr,
    /// Directory to write each received stream into (none: discard).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Frame size of the raw stream.
pub const FRAME: usize = 1 << 20;

/// Runs the receiver forever.
pub fn run(a: Args) -> anyhow::Result<i32> {
    let l = TcpListener::bind(a.listen)?;
    let mut n = 0u64;
    loop {
        let (s, _) = l.accept()?;
        n += 1;
        let out = a.out.as_ref().map(|d| d.join(format!("raw-{n}")));
        receive(s, out.as_deref())?;
    }
}

fn receive(mut s: TcpStream, out: Option<&Path>) -> anyhow::Result<()> {
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
        anyhow::ensure!(len <= FRAME, "frame of {len} bytes");
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
pub fn send(addr: SocketAddr, file: &Path) -> anyhow::Result<()> {
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

//! Handshakes over real loopback sockets: mutual TLS admits a client whose certificate the
//! CA signed and refuses one without a certificate or with another CA's, a client refuses a
//! server its CA did not sign, and bad files are refused at load naming the file.

#![allow(clippy::unwrap_used)] // test material: a failure fails the test

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::testing::Pki;
use super::*;

/// Serves one connection: echoes 5 bytes back over TLS. Returns the handshake's outcome.
async fn echo_once(
    acceptor: Acceptor,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<io::Result<()>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (s, _) = l.accept().await?;
        let mut tls = acceptor.accept(s).await?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await?;
        tls.write_all(&buf).await?;
        tls.shutdown().await
    });
    (addr, task)
}

/// Connects with `c` and exchanges 5 bytes; the error of the first step that failed.
async fn talk(c: &Connector, addr: std::net::SocketAddr) -> io::Result<[u8; 5]> {
    let s = TcpStream::connect(addr).await?;
    let mut tls = c.connect("127.0.0.1", s).await?;
    tls.write_all(b"hello").await?;
    tls.flush().await?;
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf).await?;
    Ok(buf)
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_the_ca_signed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "fleet");
    let other = Pki::new(dir.path(), "other");
    let server = pki.issue("coordinator");
    let acceptor = Acceptor::load(&pki.server(&server, true)).unwrap();
    assert!(acceptor.mutual());

    let agent = pki.issue("agent");
    let (addr, task) = echo_once(acceptor.clone()).await;
    let c = Connector::load(&pki.client(Some(&agent))).unwrap();
    assert_eq!(&talk(&c, addr).await.unwrap(), b"hello");
    task.await.unwrap().unwrap();

    // No certificate: the server refuses the handshake; the client's read fails.
    let (addr, task) = echo_once(acceptor.clone()).await;
    let c = Connector::load(&pki.client(None)).unwrap();
    assert!(talk(&c, addr).await.is_err());
    let e = task.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");

    // A certificate another CA signed: refused the same way.
    let stranger = other.issue("stranger");
    let (addr, task) = echo_once(acceptor).await;
    let mut s = pki.client(None);
    s.identity = Some((stranger.cert, stranger.key));
    let c = Connector::load(&s).unwrap();
    assert!(talk(&c, addr).await.is_err());
    let e = task.await.unwrap().unwrap_err();
    assert!(e.to_string().to_lowercase().contains("unknown"), "{e}");
}

#[tokio::test]
async fn a_client_refuses_a_server_its_ca_did_not_sign_or_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "fleet");
    let other = Pki::new(dir.path(), "other");
    let server = other.issue("impostor");
    let (addr, task) = echo_once(Acceptor::load(&other.server(&server, false)).unwrap()).await;
    let c = Connector::load(&pki.client(None)).unwrap();
    let e = talk(&c, addr).await.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("unknown"), "{e}");
    assert!(task.await.unwrap().is_err());

    // The right CA but a name the certificate does not hold.
    let server = pki.issue("coordinator");
    let (addr, task) = echo_once(Acceptor::load(&pki.server(&server, false)).unwrap()).await;
    let mut s = pki.client(None);
    s.server_name = Some("coordinator.example".into());
    let e = talk(&Connector::load(&s).unwrap(), addr).await.unwrap_err();
    assert!(e.to_string().contains("not valid for name"), "{e}");
    assert!(task.await.unwrap().is_err());

    // Server-only TLS (no client CA): a client without a certificate is served.
    let (addr, task) = echo_once(Acceptor::load(&pki.server(&server, false)).unwrap()).await;
    let c = Connector::load(&pki.client(None)).unwrap();
    assert_eq!(&talk(&c, addr).await.unwrap(), b"hello");
    task.await.unwrap().unwrap();
}

#[test]
fn bad_files_are_refused_at_load_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "fleet");
    let id = pki.issue("coordinator");
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();

    let mut s = pki.server(&id, true);
    s.cert = missing.clone();
    let e = Acceptor::load(&s).unwrap_err().to_string();
    assert!(
        e.starts_with("certificate ") && e.contains("missing.pem"),
        "{e}"
    );

    let mut s = pki.server(&id, true);
    s.client_ca = Some(garbage.clone());
    let e = Acceptor::load(&s).unwrap_err().to_string();
    assert!(
        e.contains("CA") && e.contains("garbage.pem") && e.contains("no PEM"),
        "{e}"
    );

    let mut s = pki.server(&id, false);
    s.key = id.cert.clone(); // a certificate where the key should be
    let e = Acceptor::load(&s).unwrap_err().to_string();
    assert!(e.starts_with("private key "), "{e}");

    // A key that is not the certificate's.
    let other = pki.issue("other");
    let mut s = pki.server(&id, false);
    s.key = other.key;
    let e = Acceptor::load(&s).unwrap_err().to_string();
    assert!(e.starts_with("TLS settings"), "{e}");

    let mut c = pki.client(None);
    c.ca = garbage;
    assert!(Connector::load(&c).is_err());
    c.ca = pki.ca();
    c.server_name = Some("not a name!".into());
    assert!(Connector::load(&c).is_err());
}

//! Certificates for tests (feature `testing`): a CA and certificates it signs, written as
//! PEM files, made fresh for each test so no key is checked into the repository.

#![allow(clippy::unwrap_used)] // test material: a failure fails the test

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use crate::{ClientSettings, ServerSettings};

/// A certificate authority whose key signs [`Pki::issue`]d certificates.
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), issuer.pem()).unwrap();
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            issuer,
        }
    }

    /// The CA certificate's file.
    pub fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A certificate for `who`, valid as a server for `localhost` and `127.0.0.1` and as a
    /// client, signed by this CA.
    pub fn issue(&self, who: &str) -> Identity {
        let mut p =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, who);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let id = Identity {
            cert: self.dir.join(format!("{}-{who}.pem", self.name)),
            key: self.dir.join(format!("{}-{who}-key.pem", self.name)),
        };
        std::fs::write(&id.cert, cert.pem()).unwrap();
        std::fs::write(&id.key, key.serialize_pem()).unwrap();
        id
    }

    /// Server settings for `id`, requiring client certificates from this CA when `mutual`.
    pub fn server(&self, id: &Identity, mutual: bool) -> ServerSettings {
        ServerSettings {
            cert: id.cert.clone(),
            key: id.key.clone(),
            client_ca: mutual.then(|| self.ca()),
        }
    }

    /// Client settings trusting this CA, presenting `id` when given.
    pub fn client(&self, id: Option<&Identity>) -> ClientSettings {
        ClientSettings {
            ca: self.ca(),
            identity: id.map(|i| (i.cert.clone(), i.key.clone())),
            server_name: None,
        }
    }
}

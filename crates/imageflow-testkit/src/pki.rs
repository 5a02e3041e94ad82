//! Certificates minted per test with `rcgen`: nothing long-lived, nothing
//! secret in the repository.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A CA and the PEM files it signed, in a temporary directory:
/// `ca.pem`, `server.pem` + `server-key.pem` (valid for `localhost` and
/// `127.0.0.1`), `client.pem` + `client-key.pem`.
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    name: String,
}

impl TestPki {
    /// A new CA named `name` (two calls give two CAs that do not trust each other).
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "imageflow service",
        );
        let (client, client_key) = leaf(
            vec!["backend-api".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "backend-api",
        );
        for (file, pem) in [
            ("ca.pem", ca.pem()),
            ("server.pem", server),
            ("server-key.pem", server_key),
            ("client.pem", client),
            ("client-key.pem", client_key),
        ] {
            std::fs::write(dir.path().join(file), pem).unwrap();
        }
        Self {
            dir,
            name: name.to_string(),
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A service's variables: its certificate, and callers must present one
    /// signed by this CA.
    pub fn service_env(&self) -> HashMap<String, String> {
        self.vars(&[
            ("GRPC_TLS_CERT", "server.pem"),
            ("GRPC_TLS_KEY", "server-key.pem"),
            ("GRPC_TLS_CLIENT_CA", "ca.pem"),
        ])
    }

    /// The backend's variables: trust this CA and present its client certificate.
    pub fn backend_env(&self) -> HashMap<String, String> {
        self.vars(&[
            ("GRPC_TLS_CA", "ca.pem"),
            ("GRPC_TLS_CLIENT_CERT", "client.pem"),
            ("GRPC_TLS_CLIENT_KEY", "client-key.pem"),
        ])
    }

    fn vars(&self, pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, file)| (k.to_string(), self.path(file).display().to_string()))
            .collect()
    }
}

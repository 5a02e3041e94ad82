//! TLS between backend-api and the services (rustls on aws-lc-rs), read from
//! PEM files named by environment variables so a Kubernetes Secret mounted as a
//! volume works as is. Plaintext stays the default: nothing here is used unless
//! the variables are set.
//!
//! * [`ServerTls`] (services): `GRPC_TLS_CERT` + `GRPC_TLS_KEY`, and with
//!   `GRPC_TLS_CLIENT_CA` every caller must present a certificate signed by
//!   that CA (mutual TLS).
//! * [`ClientTls`] (backend-api): `GRPC_TLS_CA` to trust the services, and
//!   `GRPC_TLS_CLIENT_CERT` + `GRPC_TLS_CLIENT_KEY` for mutual TLS.
//!
//! Every file is read and parsed at start-up: a missing file, a file without
//! the expected PEM block, only one half of a pair or a key that does not
//! belong to its certificate stops the binary with an error naming the
//! variable, rather than failing the first handshake much later.

use std::{collections::HashMap, time::Duration};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::ConfigError;

/// A handshake that has not finished by then is dropped: a peer that connects
/// and never speaks must not hold a connection (or a call) forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The service side: its certificate and, for mutual TLS, the CA of its callers.
#[derive(Clone)]
pub struct ServerTls {
    identity: Identity,
    client_ca: Option<Certificate>,
    cert_path: String,
    client_ca_path: Option<String>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Paths only: the key stays out of every Debug print and log line.
        f.debug_struct("ServerTls")
            .field("cert", &self.cert_path)
            .field("client_ca", &self.client_ca_path)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// `None` when neither `GRPC_TLS_CERT` nor `GRPC_TLS_KEY` is set (plaintext).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Option<Self>, ConfigError> {
        let client_ca_path = var(env, "GRPC_TLS_CLIENT_CA");
        let Some((identity, cert_path)) = identity(env, "GRPC_TLS_CERT", "GRPC_TLS_KEY")? else {
            if client_ca_path.is_some() {
                return Err(ConfigError::invalid(
                    "GRPC_TLS_CLIENT_CA",
                    "needs GRPC_TLS_CERT and GRPC_TLS_KEY: client certificates are only asked for over TLS",
                ));
            }
            return Ok(None);
        };
        let client_ca = match &client_ca_path {
            Some(_) => Some(certificates(env, "GRPC_TLS_CLIENT_CA")?),
            None => None,
        };
        let tls = Self {
            identity,
            client_ca,
            cert_path,
            client_ca_path,
        };
        // Building the rustls config now catches what parsing alone cannot (a
        // key that does not belong to the certificate, a CA rustls refuses).
        tonic::transport::Server::builder()
            .tls_config(tls.config())
            .map_err(|e| {
                ConfigError::invalid(
                    "GRPC_TLS_CERT",
                    format!(
                        "GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CLIENT_CA do not make a usable TLS configuration: {}",
                        chain(&e)
                    ),
                )
            })?;
        Ok(Some(tls))
    }

    /// Whether callers must present a certificate.
    pub fn mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    pub fn config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(self.identity.clone())
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.client_ca {
            Some(ca) => config.client_ca_root(ca.clone()),
            None => config,
        }
    }
}

/// The caller side (backend-api): the CA that signed the services'
/// certificates and, for mutual TLS, the backend's own certificate.
#[derive(Clone)]
pub struct ClientTls {
    ca: Certificate,
    identity: Option<Identity>,
    /// Name checked against the services' certificates instead of each
    /// endpoint's host (for endpoints given as IP addresses).
    server_name: Option<String>,
    ca_path: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_path)
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// `None` when `GRPC_TLS_CA` is unset (plaintext).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Option<Self>, ConfigError> {
        let identity = identity(env, "GRPC_TLS_CLIENT_CERT", "GRPC_TLS_CLIENT_KEY")?;
        let server_name = var(env, "GRPC_TLS_SERVER_NAME");
        let Some(ca_path) = var(env, "GRPC_TLS_CA") else {
            if identity.is_some() || server_name.is_some() {
                return Err(ConfigError::invalid(
                    "GRPC_TLS_CA",
                    "is needed with GRPC_TLS_CLIENT_CERT/GRPC_TLS_SERVER_NAME: name the CA that signed the services' certificates",
                ));
            }
            return Ok(None);
        };
        if let Some(name) = &server_name
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            return Err(ConfigError::invalid(
                "GRPC_TLS_SERVER_NAME",
                format!("{name:?} is not a DNS name or IP address"),
            ));
        }
        let tls = Self {
            ca: certificates(env, "GRPC_TLS_CA")?,
            identity: identity.map(|(identity, _)| identity),
            server_name,
            ca_path,
        };
        // As on the server: build it once now so a bad pair fails at start.
        tonic::transport::Endpoint::from_static("https://localhost")
            .tls_config(tls.config("localhost"))
            .map_err(|e| {
                ConfigError::invalid(
                    "GRPC_TLS_CLIENT_CERT",
                    format!(
                        "GRPC_TLS_CA, GRPC_TLS_CLIENT_CERT and GRPC_TLS_CLIENT_KEY do not make a usable TLS configuration: {}",
                        chain(&e)
                    ),
                )
            })?;
        Ok(Some(tls))
    }

    /// Whether the backend presents a certificate of its own.
    pub fn mutual(&self) -> bool {
        self.identity.is_some()
    }

    /// The config for an endpoint whose URL names `host`: the certificate it
    /// presents must be valid for `GRPC_TLS_SERVER_NAME`, else for `host`.
    pub fn config(&self, host: &str) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .domain_name(self.server_name.as_deref().unwrap_or(host))
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.identity {
            Some(identity) => config.identity(identity.clone()),
            None => config,
        }
    }
}

fn var(env: &HashMap<String, String>, name: &str) -> Option<String> {
    imageflow_config::Env::new(env)
        .get(name)
        .map(str::to_string)
}

/// The file `variable` names, read whole.
fn read(env: &HashMap<String, String>, variable: &str) -> Result<(Vec<u8>, String), ConfigError> {
    let path = var(env, variable).unwrap_or_default();
    match std::fs::read(&path) {
        Ok(bytes) => Ok((bytes, path)),
        Err(err) => Err(ConfigError::invalid(
            variable,
            format!("cannot read {path:?}: {err}"),
        )),
    }
}

/// One or more PEM certificates (a chain, or a bundle of CAs).
fn certificates(env: &HashMap<String, String>, variable: &str) -> Result<Certificate, ConfigError> {
    let (pem, path) = read(env, variable)?;
    let parsed: Result<Vec<CertificateDer<'_>>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match parsed {
        Ok(certs) if !certs.is_empty() => Ok(Certificate::from_pem(pem)),
        Ok(_) => Err(ConfigError::invalid(
            variable,
            format!("{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        )),
        Err(err) => Err(ConfigError::invalid(
            variable,
            format!("{path:?} is not valid PEM: {err}"),
        )),
    }
}

/// A certificate and its key, both or neither; `None` when neither is set.
fn identity(
    env: &HashMap<String, String>,
    cert_variable: &str,
    key_variable: &str,
) -> Result<Option<(Identity, String)>, ConfigError> {
    match (var(env, cert_variable), var(env, key_variable)) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::invalid(
            key_variable,
            format!("is unset but {cert_variable} is set: give the certificate's private key too"),
        )),
        (None, Some(_)) => Err(ConfigError::invalid(
            cert_variable,
            format!("is unset but {key_variable} is set: give the key's certificate too"),
        )),
        (Some(_), Some(_)) => {
            let cert = certificates(env, cert_variable)?;
            let (key, key_path) = read(env, key_variable)?;
            if let Err(err) = PrivateKeyDer::from_pem_slice(&key) {
                return Err(ConfigError::invalid(
                    key_variable,
                    format!(
                        "{key_path:?} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {err}"
                    ),
                ));
            }
            let cert_path = var(env, cert_variable).unwrap_or_default();
            Ok(Some((
                Identity::from_pem(cert.into_inner(), key),
                cert_path,
            )))
        }
    }
}

/// An error with its causes, which is where rustls says what it refused.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = params.self_signed(&ca_key).unwrap();
            let issuer = rcgen::Issuer::new(params, ca_key);
            let key = rcgen::KeyPair::generate().unwrap();
            let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            let other_key = rcgen::KeyPair::generate().unwrap();
            for (name, text) in [
                ("ca.pem", ca.pem()),
                ("cert.pem", leaf.pem()),
                ("key.pem", key.serialize_pem()),
                ("other-key.pem", other_key.serialize_pem()),
                (
                    "garbage.pem",
                    "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n".into(),
                ),
                ("empty.pem", String::new()),
            ] {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            Self { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        fn env(&self, pairs: &[(&str, &str)]) -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, file)| (k.to_string(), self.path(file)))
                .collect()
        }
    }

    #[test]
    fn nothing_set_is_plaintext() {
        assert!(ServerTls::from_env(&HashMap::new()).unwrap().is_none());
        assert!(ClientTls::from_env(&HashMap::new()).unwrap().is_none());
    }

    #[test]
    fn complete_settings_load_and_keep_the_key_out_of_debug() {
        let files = Files::new();
        let server = ServerTls::from_env(&files.env(&[
            ("GRPC_TLS_CERT", "cert.pem"),
            ("GRPC_TLS_KEY", "key.pem"),
            ("GRPC_TLS_CLIENT_CA", "ca.pem"),
        ]))
        .unwrap()
        .unwrap();
        assert!(server.mutual());
        let client = ClientTls::from_env(&files.env(&[
            ("GRPC_TLS_CA", "ca.pem"),
            ("GRPC_TLS_CLIENT_CERT", "cert.pem"),
            ("GRPC_TLS_CLIENT_KEY", "key.pem"),
        ]))
        .unwrap()
        .unwrap();
        assert!(client.mutual());
        let key = std::fs::read_to_string(files.path("key.pem")).unwrap();
        let body = key.lines().nth(1).unwrap();
        for debug in [format!("{server:?}"), format!("{client:?}")] {
            assert!(!debug.contains(body), "{debug}");
        }
    }

    /// The variables set (to files of [`Files`]), the variable the error must
    /// name, and a phrase of its message.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

    #[test]
    fn each_mistake_names_its_variable() {
        let files = Files::new();
        let cases: &[Case] = &[
            (
                &[("GRPC_TLS_CERT", "cert.pem")],
                "GRPC_TLS_KEY",
                "private key",
            ),
            (
                &[("GRPC_TLS_KEY", "key.pem")],
                "GRPC_TLS_CERT",
                "certificate",
            ),
            (
                &[
                    ("GRPC_TLS_CERT", "missing.pem"),
                    ("GRPC_TLS_KEY", "key.pem"),
                ],
                "GRPC_TLS_CERT",
                "cannot read",
            ),
            (
                &[
                    ("GRPC_TLS_CERT", "garbage.pem"),
                    ("GRPC_TLS_KEY", "key.pem"),
                ],
                "GRPC_TLS_CERT",
                "not valid PEM",
            ),
            (
                &[("GRPC_TLS_CERT", "empty.pem"), ("GRPC_TLS_KEY", "key.pem")],
                "GRPC_TLS_CERT",
                "no PEM certificate",
            ),
            (
                &[("GRPC_TLS_CERT", "cert.pem"), ("GRPC_TLS_KEY", "cert.pem")],
                "GRPC_TLS_KEY",
                "no PEM private key",
            ),
            (
                &[
                    ("GRPC_TLS_CERT", "cert.pem"),
                    ("GRPC_TLS_KEY", "other-key.pem"),
                ],
                "GRPC_TLS_CERT",
                "usable TLS configuration",
            ),
            (
                &[("GRPC_TLS_CLIENT_CA", "ca.pem")],
                "GRPC_TLS_CLIENT_CA",
                "needs GRPC_TLS_CERT",
            ),
            (
                &[
                    ("GRPC_TLS_CERT", "cert.pem"),
                    ("GRPC_TLS_KEY", "key.pem"),
                    ("GRPC_TLS_CLIENT_CA", "key.pem"),
                ],
                "GRPC_TLS_CLIENT_CA",
                "no PEM certificate",
            ),
        ];
        for (pairs, variable, needle) in cases {
            let err = ServerTls::from_env(&files.env(pairs)).unwrap_err();
            assert_eq!(err.variable, *variable, "{pairs:?}: {err}");
            assert!(err.message.contains(needle), "{pairs:?}: {err}");
        }

        let cases: &[Case] = &[
            (
                &[
                    ("GRPC_TLS_CLIENT_CERT", "cert.pem"),
                    ("GRPC_TLS_CLIENT_KEY", "key.pem"),
                ],
                "GRPC_TLS_CA",
                "is needed",
            ),
            (
                &[("GRPC_TLS_CA", "missing.pem")],
                "GRPC_TLS_CA",
                "cannot read",
            ),
            (
                &[
                    ("GRPC_TLS_CA", "ca.pem"),
                    ("GRPC_TLS_CLIENT_CERT", "cert.pem"),
                ],
                "GRPC_TLS_CLIENT_KEY",
                "private key",
            ),
            (
                &[
                    ("GRPC_TLS_CA", "ca.pem"),
                    ("GRPC_TLS_CLIENT_CERT", "cert.pem"),
                    ("GRPC_TLS_CLIENT_KEY", "other-key.pem"),
                ],
                "GRPC_TLS_CLIENT_CERT",
                "usable TLS configuration",
            ),
        ];
        for (pairs, variable, needle) in cases {
            let err = ClientTls::from_env(&files.env(pairs)).unwrap_err();
            assert_eq!(err.variable, *variable, "{pairs:?}: {err}");
            assert!(err.message.contains(needle), "{pairs:?}: {err}");
        }
        let mut env = files.env(&[("GRPC_TLS_CA", "ca.pem")]);
        env.insert("GRPC_TLS_SERVER_NAME".into(), "not a name!".into());
        assert_eq!(
            ClientTls::from_env(&env).unwrap_err().variable,
            "GRPC_TLS_SERVER_NAME"
        );
    }
}

//! wharf's own public-key infrastructure. The controller keeps a certificate authority;
//! an agent joins with a one-time token that also pins that CA (by the sha256 of its
//! certificate), sends a certificate signing request and gets back a client certificate
//! naming its host. From then on agent and controller talk mutual TLS: the agent trusts
//! only the pinned CA, the controller only certificates its CA issued.
//!
//! The controller's server certificate names [`CONTROLLER_NAME`] rather than an address,
//! so the same certificate serves whatever address agents reach it by; agents resolve
//! that name to the address they were given.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// The name in the controller's server certificate.
pub const CONTROLLER_NAME: &str = "controller.wharf";
/// Agent certificates name their host as `host-<id>`.
const HOST_PREFIX: &str = "host-";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate error: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("tls configuration: {0}")]
    Tls(String),
    #[error("the certificate signing request is invalid: {0}")]
    BadRequest(String),
}

/// The sha256 of a certificate's DER bytes, in hex: what a join token pins.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| PkiError::Tls(format!("not a PEM certificate: {e}")))?;
    Ok(parsed.contents)
}

/// The sha256 fingerprint of a PEM certificate.
pub fn fingerprint_pem(pem: &str) -> Result<String, PkiError> {
    Ok(fingerprint(&pem_to_der(pem)?))
}

/// The controller's certificate authority.
pub struct Authority {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
}

impl Authority {
    /// Loads the CA from `dir` (`ca.pem`, `ca.key`), creating it on first use. The key
    /// file is readable by its owner only.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PkiError::Io { path, source }
        };
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert_path.exists() && key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key =
                KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io(&key_path))?)?;
            let cert_der = pem_to_der(&cert_pem)?;
            return Ok(Self {
                cert_pem,
                cert_der,
                key,
            });
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name("wharf controller CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let cert = params.self_signed(&key)?;
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?)
    }

    /// A fresh server certificate and key for the controller's agent listener.
    pub fn server_identity(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![CONTROLLER_NAME.to_owned()])?;
        params.distinguished_name = name(CONTROLLER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer()?)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((
            vec![
                cert.der().clone(),
                CertificateDer::from(self.cert_der.clone()),
            ],
            key,
        ))
    }

    /// Signs an agent's request with a certificate naming `host-<host_id>`. Only the
    /// request's public key is used: the controller decides what the certificate says.
    /// Checks a signing request without signing it, so a join with garbage in it is
    /// refused before it spends its token or registers anything.
    pub fn check_request(csr_pem: &str) -> Result<(), PkiError> {
        rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map(|_| ())
            .map_err(|e| PkiError::BadRequest(e.to_string()))
    }

    pub fn sign_agent(&self, csr_pem: &str, host_id: i64, serial: u64) -> Result<String, PkiError> {
        let request = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadRequest(e.to_string()))?;
        // The name is also the certificate's DNS name, so agents can verify each other
        // when one reaches an instance on another's host (the mesh).
        let host = host_name(host_id);
        let mut params = CertificateParams::new(vec![host.clone()])?;
        params.distinguished_name = name(&host);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial.to_be_bytes()));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let cert = params.signed_by(&request.public_key, &self.issuer()?)?;
        Ok(cert.pem())
    }

    /// The TLS configuration of the agent listener: a server certificate from this CA,
    /// and client certificates verified against it when presented. Joining agents have
    /// none yet; routes that need an agent check for its identity themselves.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.cert_der.clone()))
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
        let (chain, key) = self.server_identity()?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok(Arc::new(config))
    }
}

impl Authority {
    /// The TLS configuration of the API beyond loopback: the same kind of server
    /// certificate (clients pin the CA), no client certificates (callers use tokens).
    pub fn api_server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (chain, key) = self.server_identity()?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        Ok(Arc::new(config))
    }
}

/// The name an agent certificate gives its host.
pub fn host_name(host_id: i64) -> String {
    format!("{HOST_PREFIX}{host_id}")
}

/// The TLS configurations of the mesh between agents: each agent's listener asks for a
/// certificate of the same CA from whoever connects, and each agent reaching another
/// verifies the other's certificate names the host it meant to reach.
pub struct MeshTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

pub fn mesh_tls(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<MeshTls, PkiError> {
    use rustls::pki_types::pem::PemObject;
    let tls = |e: &dyn std::fmt::Display| PkiError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls(&e))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| tls(&e))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls(&e))?;
    Ok(MeshTls {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// What a verified agent certificate says: its host and serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub host_id: i64,
    pub serial: u64,
}

/// Reads the host id and serial of a client certificate (already verified by TLS).
pub fn agent_identity(der: &[u8]) -> Option<AgentIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    let host_id = cn.strip_prefix(HOST_PREFIX)?.parse().ok()?;
    let serial_bytes = cert.raw_serial();
    let serial = serial_bytes
        .iter()
        .rev()
        .take(8)
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    Some(AgentIdentity { host_id, serial })
}

/// A new agent key pair and the signing request for it.
pub struct AgentKey {
    pub key_pem: String,
    pub csr_pem: String,
}

pub fn new_agent_key(name_hint: &str) -> Result<AgentKey, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(name_hint);
    let csr = params.serialize_request(&key)?;
    Ok(AgentKey {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_survives_a_restart_and_signs_agents() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let again = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint());
        assert_eq!(fingerprint_pem(ca.cert_pem()).unwrap(), ca.fingerprint());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        let agent = new_agent_key("web-1").unwrap();
        let cert = again.sign_agent(&agent.csr_pem, 42, 7).unwrap();
        let identity = agent_identity(&pem_to_der(&cert).unwrap()).unwrap();
        assert_eq!(
            identity,
            AgentIdentity {
                host_id: 42,
                serial: 7
            }
        );
        assert!(ca.server_config().is_ok());
    }

    #[test]
    fn garbage_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        assert!(matches!(
            ca.sign_agent("not a csr", 1, 1),
            Err(PkiError::BadRequest(_))
        ));
    }
}

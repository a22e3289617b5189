//! TLS for monserv's own connections out (notifiers): rustls on aws-lc-rs, the crypto
//! library russh already links, so the binary carries one crypto implementation.
//!
//! Trust comes from the system bundle (when the image has one) plus an optional plant
//! CA file. Skipping verification exists only as `danger_accept_invalid_certs`, which
//! logs a warning at every start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Where Debian, Buildroot/Yocto (ca-certificates), Fedora and Alpine keep the bundle.
const SYSTEM_BUNDLES: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// How a sink verifies the servers it talks to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of extra trusted CAs (a plant CA).
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Named to be noticed; logged at start.
    pub danger_accept_invalid_certs: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("no trusted CA: no system bundle ({}) and no ca_file", SYSTEM_BUNDLES.join(", "))]
    NoRoots,
    #[error("{0}")]
    Rustls(String),
}

/// The aws-lc-rs provider, cut to what a client of plant and public services needs:
/// AES-GCM and ChaCha20 suites, X25519 and P-256/P-384 key exchange, RSA, ECDSA
/// P-256/P-384 and Ed25519 certificates. Left out (binary size on the appliance):
/// post-quantum ML-KEM groups and ML-DSA certificates, P-521, and private-key loading
/// (no client certificates).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{cipher_suite as cs, kx_group};
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        signature_verification_algorithms: VERIFY,
        secure_random: &OsRandom,
        key_provider: &NoKeys,
    })
}

static VERIFY: rustls::crypto::WebPkiSupportedAlgorithms = {
    use webpki::aws_lc_rs as alg;
    use SignatureScheme as S;
    rustls::crypto::WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::ED25519,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
            alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        mapping: &[
            (S::ECDSA_NISTP384_SHA384, &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384]),
            (S::ECDSA_NISTP256_SHA256, &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256]),
            (S::ED25519, &[alg::ED25519]),
            (S::RSA_PSS_SHA512, &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
            (S::RSA_PSS_SHA384, &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
            (S::RSA_PSS_SHA256, &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
            (S::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
            (S::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
            (S::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

/// TLS randomness from the operating system.
#[derive(Debug)]
struct OsRandom;

impl rustls::crypto::SecureRandom for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, buf).map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// monserv presents no client certificate, so it loads no private key.
#[derive(Debug)]
struct NoKeys;

impl rustls::crypto::KeyProvider for NoKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General("monserv loads no private keys for outgoing TLS".into()))
    }
}

fn load_pem(path: &Path, roots: &mut RootCertStore) -> Result<usize, TlsError> {
    let bad = |reason: String| TlsError::CaFile { path: path.display().to_string(), reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    Ok(added)
}

/// A client configuration for `options`. Reads files: call once per sink at start.
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    if options.danger_accept_invalid_certs {
        let verifier = Arc::new(AcceptAnything(provider()));
        return Ok(Arc::new(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()));
    }
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &options.ca_file {
        if load_pem(ca, &mut roots)? == 0 {
            return Err(TlsError::CaFile { path: ca.display().to_string(), reason: "no PEM certificate in it".into() });
        }
    }
    let system = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let bundles = system.into_iter().chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for bundle in bundles {
        if bundle.is_file() && load_pem(&bundle, &mut roots).unwrap_or(0) > 0 {
            break;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
}

/// A byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Wrap `tcp` in TLS for `host` (a name or an IP literal).
pub async fn wrap(
    config: &Arc<ClientConfig>,
    host: &str,
    tcp: Box<dyn Stream>,
) -> std::io::Result<tokio_rustls::client::TlsStream<Box<dyn Stream>>> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?} is not a TLS name")))?;
    tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await
}

/// Connect to `host:port`, with TLS when `tls` is given.
pub async fn connect(host: &str, port: u16, tls: Option<&Arc<ClientConfig>>) -> std::io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    match tls {
        None => Ok(Box::new(tcp)),
        Some(config) => Ok(Box::new(wrap(config, host, Box::new(tcp)).await?)),
    }
}

/// The verifier behind `danger_accept_invalid_certs`: signatures are still checked
/// (the handshake stays sound), the certificate chain and name are not.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

//! TLS: monserv's connections out (notifiers) and its own `https://`/`wss://` port.
//! rustls on aws-lc-rs, the crypto library russh already links, so the binary carries
//! one crypto implementation.
//!
//! Going out, trust comes from the system bundle (when the image has one) plus an
//! optional plant CA file. Skipping verification exists only as
//! `danger_accept_invalid_certs`, which logs a warning at every start. Serving, the
//! certificate and key come from PEM files ([`server_config`]), with optional client
//! certificates (mTLS) verified against a plant CA.

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
    #[error("{what} {path}: {reason}")]
    ServeFile { what: &'static str, path: String, reason: String },
}

/// The aws-lc-rs provider, cut to what a client of plant and public services needs:
/// AES-GCM and ChaCha20 suites, X25519 and P-256/P-384 key exchange, RSA, ECDSA
/// P-256/P-384 and Ed25519 certificates. Left out (binary size on the appliance):
/// post-quantum ML-KEM groups and ML-DSA certificates, P-521, and the key provider
/// (no client certificates going out; serving loads its key in [`server_config`]).
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
        rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, buf).map_err(|_| rustls::crypto::GetRandomFailed)
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
    client_config_with_identity(options, None)
}

/// The client's own certificate chain and key (mutual TLS), from PEM files.
#[derive(Debug)]
struct ClientIdentity(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn client_identity(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<ClientIdentity>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let bad = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |reason: String| TlsError::Rustls(format!("client certificate {path}: {reason}"))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert)(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert)(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert)("no PEM certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key)(e.to_string()))?;
    let signer =
        signing_key(&key_der).map_err(|_| bad(key)("not an RSA or ECDSA (P-256, P-384) private key".into()))?;
    Ok(Arc::new(ClientIdentity(Arc::new(rustls::sign::CertifiedKey::new(certs, signer)))))
}

/// As [`client_config`], presenting `identity` (certificate, key PEM files) when given.
pub fn client_config_with_identity(
    options: &TlsOptions,
    identity: Option<&(PathBuf, PathBuf)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let identity = identity.map(|(c, k)| client_identity(c, k)).transpose()?;
    let finish = |b: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>| match &identity {
        Some(id) => b.with_client_cert_resolver(id.clone()),
        None => b.with_no_client_auth(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    if options.danger_accept_invalid_certs {
        let verifier = Arc::new(AcceptAnything(provider()));
        return Ok(Arc::new(finish(builder.dangerous().with_custom_certificate_verifier(verifier))));
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
    Ok(Arc::new(finish(builder.with_root_certificates(roots))))
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

/// The certificate chain, key and (for mTLS) client CAs, as PEM bytes.
pub struct ServePem<'a> {
    pub cert: &'a [u8],
    pub key: &'a [u8],
    pub client_ca: Option<&'a [u8]>,
}

fn serve_err(what: &'static str) -> impl Fn(String) -> TlsError {
    move |reason| TlsError::ServeFile { what, path: String::new(), reason }
}

/// A server configuration for `pem`: HTTP/1.1 only, TLS 1.2 and 1.3, the key checked
/// against the certificate, client certificates required when `client_ca` is given.
/// Errors name the part that is wrong (`path` is filled in by the caller).
pub fn server_config(pem: &ServePem<'_>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::PrivateKeyDer;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| serve_err("certificate file")(e.to_string()))?;
    if certs.is_empty() {
        return Err(serve_err("certificate file")("no PEM certificate in it".into()));
    }
    webpki::EndEntityCert::try_from(&certs[0])
        .map_err(|e| serve_err("certificate file")(format!("not a valid X.509 certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(pem.key).map_err(|e| serve_err("key file")(e.to_string()))?;
    let signing = signing_key(&key)?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| serve_err("key file")(format!("does not match the certificate: {e}")))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match pem.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| serve_err("client CA file")(e.to_string()))?;
                roots.add(cert).map_err(|e| serve_err("client CA file")(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(serve_err("client CA file")("no PEM certificate in it".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| serve_err("client CA file")(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// RSA (PKCS#1 or PKCS#8) or ECDSA P-256/P-384 (SEC1 or PKCS#8): what plant and
/// public CAs issue and every browser accepts. Not rustls's `any_supported_type`,
/// which also links Ed25519 and ML-DSA signing (about 100 KB on the appliance) for
/// certificates browsers do not take. `RsaSigningKey` is public but hidden in rustls;
/// Cargo.lock pins the version, and a change would fail the build, not the handshake.
fn signing_key(key: &rustls::pki_types::PrivateKeyDer<'_>) -> Result<Arc<dyn rustls::sign::SigningKey>, TlsError> {
    use rustls::crypto::aws_lc_rs::sign::{any_ecdsa_type, RsaSigningKey};
    if let Ok(rsa) = RsaSigningKey::new(key) {
        return Ok(Arc::new(rsa));
    }
    any_ecdsa_type(key).map_err(|_| serve_err("key file")("not an RSA or ECDSA (P-256, P-384) private key".into()))
}

/// The subject's common name (OID 2.5.4.3) of a DER certificate, for audit lines.
/// A small DER walk: Certificate -> tbsCertificate -> subject -> RDNs.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    /// (tag, contents, rest) of the DER element at the start of `b`.
    fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, mut b) = b.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            let len = b[..n].iter().fold(0usize, |acc, &x| (acc << 8) | x as usize);
            b = &b[n..];
            len
        };
        (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
    }
    let (_, cert, _) = element(der)?;
    let (_, mut tbs, _) = element(cert)?;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, rest) = element(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..4 {
        tbs = element(tbs)?.2;
    }
    let (_, mut rdns, _) = element(tbs)?;
    while !rdns.is_empty() {
        let (_, set, rest) = element(rdns)?;
        rdns = rest;
        let (_, attr, _) = element(set)?;
        let (_, oid, value) = element(attr)?;
        if oid == [0x55, 0x04, 0x03] {
            let (_, text, _) = element(value)?;
            let name = String::from_utf8_lossy(text);
            return Some(name.chars().filter(|c| !c.is_control()).take(128).collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -subj
    /// "/O=Plant/CN=operator-7" -days 1 -nodes`, base64 of the DER.
    const OPERATOR_CERT: &str = include_str!("../tests/fixtures/tls/operator-7.b64");

    #[test]
    fn common_name_of_a_real_certificate() {
        let der: Vec<u8> = decode_base64(OPERATOR_CERT);
        assert_eq!(subject_common_name(&der).as_deref(), Some("operator-7"));
        assert_eq!(subject_common_name(&der[..40]), None);
        assert_eq!(subject_common_name(b""), None);
    }

    fn decode_base64(text: &str) -> Vec<u8> {
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
            let v = table.iter().position(|&t| t == c).unwrap() as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }

    #[test]
    fn bad_server_files_are_named() {
        let e = server_config(&ServePem { cert: b"nothing", key: b"", client_ca: None }).unwrap_err().to_string();
        assert!(e.contains("certificate file"), "{e}");
    }
}

//! `https://` and `wss://` (issue #10) with real clients: the document's Python and
//! Node.js examples unchanged but for the URL (trusting the test CA the way each
//! runtime does), Chromium on the built-in page, curl for REST; certificate rotation
//! with a client connected; client certificates (mTLS). `local` only: no root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clients::{browser_with, clients_dir, seed_copy, Lines};
use crate::support::receiver::TestCa;
use crate::support::{self, TestDaemon};

/// The daemon's certificate and key live where an operator would keep them, so a
/// test can replace them.
fn tls_config(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "poll_interval_seconds = 0.5\n{extra}\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

fn copy_atomically(from: &Path, to: &Path) {
    support::write_atomically(to, &std::fs::read(from).unwrap());
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// base64 of the SHA-256 of the server key's SubjectPublicKeyInfo (Chromium's
/// `--ignore-certificate-errors-spki-list`: trust exactly this key).
fn spki_hash(cert: &Path) -> String {
    let cmd = format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = Command::new("sh").args(["-c", &cmd]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_with_real_clients() {
    let ca = TestCa::new();
    let d = TestDaemon::start(&["local".into()], &tls_config(&ca.cert, &ca.key, "")).await;
    let port = d.addr.port();
    let wss = format!("wss://localhost:{port}/ws");
    let dir = tempfile::tempdir().unwrap();
    let ca_path = ca.ca.to_str().unwrap();

    // Python websockets: the default SSL context trusts SSL_CERT_FILE.
    let script = seed_copy("seed_client.py", &wss, &dir);
    let mut py = Lines::spawn(Command::new("python3").arg("-u").arg(&script).env("SSL_CERT_FILE", ca_path));
    py.wait_for(Duration::from_secs(20), |l| l == "Connected to WebSocket");
    py.wait_for(Duration::from_secs(10), |l| l == "Metrics update: 1 servers");
    drop(py);

    // Node ws: NODE_EXTRA_CA_CERTS.
    let script = seed_copy("seed_client.js", &wss, &dir);
    let mut node = Lines::spawn(
        Command::new("node")
            .arg(&script)
            .env("NODE_PATH", clients_dir().join("node_modules"))
            .env("NODE_EXTRA_CA_CERTS", ca_path),
    );
    node.wait_for(Duration::from_secs(20), |l| l == "Connected to WebSocket");
    node.wait_for(Duration::from_secs(10), |l| l == "Metrics update: 1 servers");
    drop(node);

    // curl for REST; without the CA it is refused.
    let (ok, out) = curl(&["--cacert", ca_path, &format!("https://localhost:{port}/api/v1/servers")]);
    assert!(ok, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["data"]["total"], 1);
    let (ok, out) = curl(&[&format!("https://localhost:{port}/api/v1/servers")]);
    assert!(!ok && out.contains("certificate"), "{out}");

    // Chromium on the built-in page over https, the page's own wss:// included.
    let spki = spki_hash(&ca.cert);
    let mut b = browser_with("builtin", &format!("https://localhost:{port}/"), 1, &[("SPKI", &spki)]);
    let line = b.wait_for(Duration::from_secs(60), |l| l.contains("\"metrics\""));
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["names"], serde_json::json!([support::machine_hostname()]), "{v}");
    assert_eq!(v["status"], "Live", "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    drop(b);

    // A plain-HTTP client on the TLS port gets nothing, and the port keeps serving.
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    assert!(curl(&["--cacert", ca_path, &format!("https://127.0.0.1:{port}/api/v1/health")]).0);
    assert!(d.shutdown().await);
}

type TlsWs = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A wss:// client of our own, to see which certificate the server presents.
async fn wss_client(
    addr: std::net::SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> std::io::Result<(TlsWs, Vec<u8>)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert).unwrap().map(|c| c.unwrap()).collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{}/ws", addr.port()), tls)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((ws, presented))
}

/// The type of the next message that is not an alert (the built-in rule may alert on
/// this machine's load at any time).
async fn next_type(ws: &mut TlsWs) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("no message").unwrap().unwrap();
        if let Ok(text) = msg.to_text() {
            let v: Value = serde_json::from_str(text).unwrap();
            if v["type"] != "alert" {
                return v["type"].as_str().unwrap().to_string();
            }
        }
    }
}

fn der_of(pem: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(pem).unwrap().next().unwrap().unwrap().to_vec()
}

/// Renewal in place: new handshakes get the new certificate within seconds, the
/// client connected before keeps receiving; a broken file is refused and the current
/// certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_keeps_connected_clients() {
    let ca = TestCa::new();
    let live = tempfile::tempdir().unwrap();
    let (cert, key): (PathBuf, PathBuf) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    copy_atomically(&ca.cert, &cert);
    copy_atomically(&ca.key, &key);
    let d = TestDaemon::start(&["local".into()], &tls_config(&cert, &key, "")).await;
    let (mut before, first) = wss_client(d.addr, &ca.ca, None).await.unwrap();
    assert_eq!(first, der_of(&ca.cert));
    assert_eq!(next_type(&mut before).await, "metrics_update");

    let (new_cert, new_key) = ca.issue("renewed", "localhost", TestCa::SERVER_EXT);
    // Key first, then certificate, as renewal tools do; a check in between may see a
    // mismatched pair, which must only be logged.
    copy_atomically(&new_key, &key);
    copy_atomically(&new_cert, &cert);
    let start = Instant::now();
    loop {
        let (_, presented) = wss_client(d.addr, &ca.ca, None).await.unwrap();
        if presented == der_of(&new_cert) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "the renewed certificate was never served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(next_type(&mut before).await, "metrics_update", "the connected client was dropped");

    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut after, presented) = wss_client(d.addr, &ca.ca, None).await.unwrap();
    assert_eq!(presented, der_of(&new_cert));
    assert_eq!(next_type(&mut after).await, "metrics_update");
    assert_eq!(next_type(&mut before).await, "metrics_update");
    assert!(d.shutdown().await);
}

/// mTLS: with `client_ca_file`, a client without a certificate from that CA does not
/// get past the handshake; one with it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_when_configured() {
    let ca = TestCa::new();
    let (client_cert, client_key) =
        ca.issue("operator", "operator-7", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
    let other = TestCa::new();
    let (stranger_cert, stranger_key) =
        other.issue("stranger", "stranger", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
    let extra = format!("client_ca_file = {:?}", ca.ca.display().to_string());
    let config = tls_config(&ca.cert, &ca.key, "").replace("[tls]\n", &format!("[tls]\n{extra}\n"));
    let d = TestDaemon::start(&["local".into()], &config).await;
    let port = d.addr.port();
    let url = format!("https://localhost:{port}/api/v1/servers");
    let ca_path = ca.ca.to_str().unwrap();
    let (ok, out) = curl(&["--cacert", ca_path, &url]);
    assert!(!ok, "served without a client certificate: {out}");
    let (ok, out) = curl(&[
        "--cacert",
        ca_path,
        "--cert",
        stranger_cert.to_str().unwrap(),
        "--key",
        stranger_key.to_str().unwrap(),
        &url,
    ]);
    assert!(!ok, "served a certificate from another CA: {out}");
    let (ok, out) = curl(&[
        "--cacert",
        ca_path,
        "--cert",
        client_cert.to_str().unwrap(),
        "--key",
        client_key.to_str().unwrap(),
        &url,
    ]);
    assert!(ok, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["data"]["total"], 1);
    let (mut ws, _) = wss_client(d.addr, &ca.ca, Some((&client_cert, &client_key))).await.unwrap();
    assert_eq!(next_type(&mut ws).await, "metrics_update");
    assert!(wss_client(d.addr, &ca.ca, None).await.is_err());
    assert!(d.shutdown().await);
}

/// RSA keys (what most plant CAs issue) serve as well as ECDSA; a key that does not
/// fit (Ed25519, which browsers do not take; a key of another certificate; a broken
/// file) stops the start with an error naming the file and the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keys_rsa_ecdsa_and_clear_errors() {
    let rsa = TestCa::rsa();
    let d = TestDaemon::start(&["local".into()], &tls_config(&rsa.cert, &rsa.key, "")).await;
    let url = format!("https://localhost:{}/api/v1/health", d.addr.port());
    let (ok, out) = curl(&["--cacert", rsa.ca.to_str().unwrap(), &url]);
    assert!(ok, "{out}");
    assert!(d.shutdown().await);

    let ecdsa = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ed = dir.path().join("ed25519.key");
    let gen = Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(&ed).output().unwrap();
    assert!(gen.status.success());
    let broken = dir.path().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n").unwrap();
    // A FIFO with no writer: reading it the plain way would hang the start.
    let fifo = dir.path().join("fifo.key");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let cases = [
        (&ecdsa.cert, &ed, "not an RSA or ECDSA"),
        (&ecdsa.cert, &rsa.key, "does not match the certificate"),
        (&broken, &ecdsa.key, "certificate file"),
        (&ecdsa.cert, &dir.path().join("missing.key"), "No such file"),
        (&ecdsa.cert, &fifo, "not a regular file (a FIFO)"),
    ];
    for (cert, key, expected) in cases {
        let state = tempfile::tempdir().unwrap();
        let toml = TestDaemon::toml(&["local".into()], &tls_config(cert, key, ""), state.path());
        let config = monserv::config::Config::from_toml(&toml, &[("_", "_")]).unwrap();
        let e = match monserv::Daemon::start(config).await {
            Ok(_) => panic!("started with {cert:?} and {key:?}"),
            Err(e) => e,
        };
        assert!(e.is_config(), "{e}");
        let text = e.to_string();
        assert!(text.contains(expected), "{text}");
        let named = if expected == "certificate file" { cert } else { key };
        assert!(text.contains(&named.display().to_string()), "the file is not named: {text}");
    }
}

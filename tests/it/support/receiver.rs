//! Real HTTP(S) receivers on loopback standing in for a webhook endpoint, Slack and
//! the Telegram Bot API: they answer each request with the next scripted status and
//! record what came (path, headers, JSON body). `TestCa` makes a CA and a
//! `localhost`/127.0.0.1 server certificate with the openssl command.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub status: u16,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A CA and a server certificate for localhost and 127.0.0.1, in a temporary dir.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// ECDSA P-256 keys.
    pub fn new() -> TestCa {
        Self::with_keys(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
    }

    /// RSA 2048 keys, what most plant and public CAs still issue.
    pub fn rsa() -> TestCa {
        Self::with_keys(&["-newkey", "rsa:2048", "-nodes"])
    }

    fn with_keys(keys: &[&str]) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl").args(args).current_dir(dir.path()).output().unwrap();
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&[
            &["req", "-x509"][..],
            keys,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=monserv test CA"],
        ]
        .concat());
        let ca = TestCa { ca: p("ca.pem"), cert: p("server.pem"), key: p("server.key"), dir };
        ca.issue_with("server", "localhost", Self::SERVER_EXT, keys);
        ca
    }

    /// Another certificate from this CA (P-256): `<name>.pem` and `<name>.key`, with
    /// `ext` as its extensions (e.g. a server's SANs, or `extendedKeyUsage=clientAuth`).
    pub fn issue(&self, name: &str, cn: &str, ext: &str) -> (PathBuf, PathBuf) {
        self.issue_with(name, cn, ext, &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
    }

    fn issue_with(&self, name: &str, cn: &str, ext: &str, keys: &[&str]) -> (PathBuf, PathBuf) {
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl").args(args).current_dir(self.dir.path()).output().unwrap();
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let (key, csr, pem, cnf) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.cnf"));
        let subj = format!("/CN={cn}");
        run(&[&["req"][..], keys, &["-keyout", &key, "-out", &csr, "-subj", &subj]].concat());
        std::fs::write(self.dir.path().join(&cnf), ext).unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &cnf,
        ]);
        (self.dir.path().join(pem), self.dir.path().join(key))
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub const SERVER_EXT: &'static str =
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n";

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&self.cert).unwrap().map(|c| c.unwrap()).collect();
        let key = PrivateKeyDer::from_pem_file(&self.key).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl Receiver {
    /// Plain HTTP on `port` (0: any), answering `script` in turn, then 200.
    pub async fn start(port: u16, script: &[u16]) -> Receiver {
        Self::start_with(port, script, None, "{}").await
    }

    /// As `start`, with TLS when `tls` is given, answering `answer` as the body.
    pub async fn start_with(
        port: u16,
        script: &[u16],
        tls: Option<tokio_rustls::TlsAcceptor>,
        answer: &'static str,
    ) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<u16>>()));
        let (seen2, script2) = (seen.clone(), script.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (seen, script, tls) = (seen2.clone(), script2.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, script) = (seen.clone(), script.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                                .collect();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let status = script.lock().unwrap().pop_front().unwrap_or(200);
                            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            seen.lock().unwrap().push(Seen { status, path, headers, body });
                            let mut resp = hyper::Response::new(Full::new(Bytes::from_static(answer.as_bytes())));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver { addr, seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// (status, first alert key, firing|resolved) of every webhook request so far.
    pub fn requests(&self) -> Vec<(u16, String, String)> {
        self.seen()
            .iter()
            .map(|s| {
                (
                    s.status,
                    s.body["alerts"][0]["labels"]["key"].as_str().unwrap_or_default().into(),
                    s.body["status"].as_str().unwrap_or_default().into(),
                )
            })
            .collect()
    }

    pub async fn wait(&self, limit: Duration, pred: impl Fn(&[(u16, String, String)]) -> bool) {
        let start = Instant::now();
        while !pred(&self.requests()) {
            assert!(start.elapsed() < limit, "receiver saw {:#?}", self.seen());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_seen(&self, limit: Duration, pred: impl Fn(&[Seen]) -> bool) {
        let start = Instant::now();
        while !pred(&self.seen()) {
            assert!(start.elapsed() < limit, "receiver saw {:#?}", self.seen());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

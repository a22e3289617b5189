//! Go MonServ agent targets: `http://host[:port][/path]` (port 9123, path `/metrics`
//! by default), polled with `GET` over one persistent HTTP/1.1 connection.
//!
//! Like an SSH host: the answer is capped at `max_output_bytes` (more is an error for
//! this host), a lost connection is re-opened with backoff, and an abandoned request
//! (the poll deadline) drops the connection. The body is handed on untouched;
//! `agent_json` judges it.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::backoff::Backoff;
use super::{CollectError, RawSample, SampleSpec};
use crate::config::HttpUrl;

pub struct AgentCollector {
    url: HttpUrl,
    connection: Option<SendRequest<Empty<Bytes>>>,
    backoff: Backoff,
    last_error: String,
}

impl AgentCollector {
    pub fn new(url: HttpUrl, backoff: Backoff) -> Self {
        AgentCollector { url, connection: None, backoff, last_error: String::new() }
    }

    pub async fn sample(&mut self, spec: &SampleSpec) -> Result<RawSample, CollectError> {
        if self.connection.as_ref().is_none_or(|c| c.is_closed()) {
            self.connection = None;
            if let Some(wait) = self.backoff.remaining() {
                return Err(CollectError::Backoff {
                    retry_in_ms: wait.as_millis() as u64,
                    last: self.last_error.clone(),
                });
            }
            match self.connect().await {
                Ok(c) => self.connection = Some(c),
                Err(e) => return Err(self.fail(e)),
            }
        }
        match self.get(spec).await {
            Ok(body) => {
                self.backoff.succeeded();
                Ok(RawSample { agent_json: Some(body), ..RawSample::default() })
            }
            Err(e) => {
                self.connection = None;
                Err(self.fail(e))
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, CollectError> {
        let stream = tokio::net::TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|e| CollectError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CollectError::Connect(e.to_string()))?;
        // The connection task ends when the sender is dropped or the peer closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn get(&mut self, spec: &SampleSpec) -> Result<Vec<u8>, CollectError> {
        let Some(sender) = self.connection.as_mut() else {
            return Err(CollectError::Connect("not connected".into()));
        };
        sender.ready().await.map_err(|e| CollectError::Connect(e.to_string()))?;
        let host = format!("{}:{}", self.url.host, self.url.port);
        let req = hyper::Request::get(self.url.path.as_str())
            .header(hyper::header::HOST, host)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| CollectError::Connect(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| CollectError::Connect(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(CollectError::Http(resp.status().as_u16()));
        }
        let limit = spec.max_output_bytes;
        match Limited::new(resp.into_body(), limit).collect().await {
            Ok(body) => Ok(body.to_bytes().to_vec()),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                Err(CollectError::OutputTooLarge { limit })
            }
            Err(e) => Err(CollectError::Connect(e.to_string())),
        }
    }

    /// The poll loop gave up on the request in flight: drop the connection.
    pub fn timed_out(&mut self) {
        self.connection = None;
        self.last_error = "no complete answer before the poll deadline".into();
        self.backoff.failed();
    }

    fn fail(&mut self, e: CollectError) -> CollectError {
        self.last_error = e.to_string();
        self.backoff.failed();
        e
    }
}

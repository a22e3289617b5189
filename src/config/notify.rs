//! `[notify.*]`: where alerts and recoveries are delivered besides `/ws`.
//!
//! Only the webhook sink so far (Alertmanager webhook v4 JSON, plain HTTP: a local
//! relay or receiver; TLS for notifiers comes with the one rustls stack). Header
//! values may be credentials: printed masked, never logged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Secret;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotifyFile {
    webhook: Option<WebhookFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    pub webhook: Option<WebhookSink>,
}

#[derive(Debug, Clone)]
pub struct WebhookSink {
    pub url: HttpUrl,
    pub headers: Vec<(String, Secret)>,
}

/// An `http://host[:port][/path]` URL, split for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Parse a sink URL. Credentials in the URL are refused (use `headers`), so a URL
/// can be shown in logs and the API as it is.
pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    parse_http_url_with(url, 80, "/")
}

/// As [`parse_http_url`], with the port and path to use when the URL has none.
pub fn parse_http_url_with(url: &str, default_port: u16, default_path: &str) -> Result<HttpUrl, String> {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err("https:// is not supported by notifiers yet (TLS comes with the rustls stack); \
                        use http:// to a local receiver or relay"
                .into())
        }
        _ => return Err("expected http://host[:port][/path]".into()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) if rest.len() > i + 1 => (&rest[..i], &rest[i..]),
        Some(i) => (&rest[..i], default_path),
        None => (rest, default_path),
    };
    if authority.contains('@') {
        return Err("credentials in the URL are not allowed; put them in headers".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => {
            (h, p.parse::<u16>().map_err(|_| format!("port {p:?} is not a number from 1 to 65535"))?)
        }
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')) {
        return Err(format!("host {host:?} is not a host name or address"));
    }
    if port == 0 || path.chars().any(|c| c.is_control() || c == ' ') {
        return Err("port 0 or a path with spaces or control characters".into());
    }
    Ok(HttpUrl { host: host.to_string(), port, path: path.to_string() })
}

impl NotifyConfig {
    pub(super) fn from_file(f: NotifyFile) -> Result<NotifyConfig, String> {
        let webhook = match f.webhook {
            None => None,
            Some(w) => {
                let url = parse_http_url(&w.url).map_err(|e| format!("notify.webhook.url = {:?}: {e}", w.url))?;
                let mut headers = Vec::new();
                for (name, value) in w.headers {
                    let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                    if !valid_name || value.chars().any(|c| c.is_control()) {
                        return Err(format!("notify.webhook.headers: {name:?} is not a valid header"));
                    }
                    headers.push((name, Secret::new(value)));
                }
                Some(WebhookSink { url, headers })
            }
        };
        Ok(NotifyConfig { webhook })
    }

    /// Names of the configured sinks, as queued in the alert store.
    pub fn sink_names(&self) -> Vec<String> {
        self.webhook.iter().map(|_| "webhook".to_string()).collect()
    }

    pub(super) fn printable(&self) -> PrintNotify {
        PrintNotify {
            webhook: self.webhook.as_ref().map(|w| PrintWebhook {
                url: w.url.to_string(),
                headers: w.headers.iter().map(|(k, _)| (k.clone(), "***")).collect(),
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct PrintNotify {
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<PrintWebhook>,
}

#[derive(Debug, Serialize)]
struct PrintWebhook {
    url: String,
    headers: BTreeMap<String, &'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:9099/hook?x=1").unwrap(),
            HttpUrl { host: "127.0.0.1".into(), port: 9099, path: "/hook?x=1".into() }
        );
        assert_eq!(parse_http_url("http://relay").unwrap().to_string(), "http://relay:80/");
        assert_eq!(
            parse_http_url_with("http://plc-7", 9123, "/metrics").unwrap().to_string(),
            "http://plc-7:9123/metrics"
        );
        assert_eq!(
            parse_http_url_with("http://plc-7:80/", 9123, "/metrics").unwrap().to_string(),
            "http://plc-7:80/metrics"
        );
        assert_eq!(parse_http_url("http://[::1]:8080").unwrap().host, "::1");
        assert!(parse_http_url("https://hooks.slack.com/x").unwrap_err().contains("not supported by notifiers yet"));
        assert!(parse_http_url("http://u:secret@h/").unwrap_err().contains("credentials"));
        assert!(parse_http_url("http://h:99999/").unwrap_err().contains("port"));
        assert!(parse_http_url("ftp://h").is_err());
    }
}

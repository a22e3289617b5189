//! `http://` and `https://` URLs of notifier endpoints and agent targets, split for
//! the client. Credentials in a URL are refused (headers and secrets carry them), so
//! a URL can be shown in logs and the API as it is.

/// An `http[s]://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
    }
}

impl HttpUrl {
    /// The `Host:` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match (self.tls, self.port) {
            (false, 80) | (true, 443) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// Parse a notifier URL (`http://` or `https://`).
pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    parse_http_url_with(url, None, "/")
}

/// As [`parse_http_url`], with the port (default: the scheme's) and path to use when
/// the URL has none.
pub fn parse_http_url_with(url: &str, default_port: Option<u16>, default_path: &str) -> Result<HttpUrl, String> {
    let (tls, rest) = match url.split_once("://") {
        Some(("http", rest)) => (false, rest),
        Some(("https", rest)) => (true, rest),
        _ => return Err("expected http[s]://host[:port][/path]".into()),
    };
    let default_port = default_port.unwrap_or(if tls { 443 } else { 80 });
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
            if h.contains(':') && !h.starts_with('[') {
                (authority, default_port) // a bare IPv6 literal
            } else {
                (h, p.parse::<u16>().map_err(|_| format!("port {p:?} is not a number from 1 to 65535"))?)
            }
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
    Ok(HttpUrl { tls, host: host.to_string(), port, path: path.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:9099/hook?x=1").unwrap(),
            HttpUrl { tls: false, host: "127.0.0.1".into(), port: 9099, path: "/hook?x=1".into() }
        );
        assert_eq!(parse_http_url("http://relay").unwrap().to_string(), "http://relay:80/");
        let slack = parse_http_url("https://hooks.slack.com/services/T0/B0/x").unwrap();
        assert_eq!((slack.tls, slack.port, slack.host_header().as_str()), (true, 443, "hooks.slack.com"));
        assert_eq!(
            parse_http_url_with("http://plc-7", Some(9123), "/metrics").unwrap().to_string(),
            "http://plc-7:9123/metrics"
        );
        assert_eq!(
            parse_http_url_with("http://plc-7:80/", Some(9123), "/metrics").unwrap().to_string(),
            "http://plc-7:80/metrics"
        );
        let v6 = parse_http_url("http://[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.host_header().as_str()), ("::1", 8080, "[::1]:8080"));
        assert!(parse_http_url("http://u:secret@h/").unwrap_err().contains("credentials"));
        assert!(parse_http_url("http://h:99999/").unwrap_err().contains("port"));
        assert!(parse_http_url("ftp://h").is_err());
        assert!(parse_http_url("http://h/a b").is_err());
    }
}

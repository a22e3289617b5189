//! Which browsers and names may talk to us: the `Host` and `Origin` checks.
//!
//! `Host` stops DNS rebinding: a hostile page whose name briefly resolves to the
//! gateway still sends its own name, which is not an IP literal, `localhost`, this
//! machine's name or an `allowed_hosts` entry. `Origin` stops cross-site WebSocket
//! hijacking and cross-site writes: a browser always sends it on a WebSocket
//! handshake and on cross-origin requests, so a request carrying a foreign one is
//! refused (403) whether or not a token is set. Requests without `Origin` (Python,
//! Node.js, curl: the MonServ document's clients) are not browsers acting for a page
//! and pass. Allowed cross-origin dashboards get CORS headers.

use std::net::{IpAddr, Ipv6Addr};

use hyper::header::{HeaderValue, HOST, ORIGIN};
use hyper::{Request, Response, StatusCode};

use super::{json_error, Body};
use crate::config::{normalize_origin, split_host_port, Hosts, Origins, Perimeter};

pub struct Gate {
    origins: Origins,
    hosts: Hosts,
    /// This machine's names: its hostname and `<hostname>.local` (mDNS).
    own_names: Vec<String>,
    scheme: &'static str,
}

/// What a request that passed may need on its response.
pub enum Pass {
    Plain,
    /// An allowed cross-origin request: answer with CORS headers for this origin.
    Cors(HeaderValue),
    /// Refused (403), with the reason to show.
    Refused(&'static str),
}

impl Pass {
    /// The 403 for a refused request.
    pub fn refusal(reason: &str) -> Response<Body> {
        json_error(StatusCode::FORBIDDEN, reason)
    }
}

impl Gate {
    pub fn new(p: &Perimeter) -> Gate {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let hostname = hostname.trim().trim_end_matches('.').to_ascii_lowercase();
        let own_names = if hostname.is_empty() { vec![] } else { vec![format!("{hostname}.local"), hostname] };
        Gate {
            origins: p.allowed_origins.clone(),
            hosts: p.allowed_hosts.clone(),
            own_names,
            scheme: if p.tls.is_some() { "https" } else { "http" },
        }
    }

    /// What the request's response needs, or why it is refused.
    pub fn check<B>(&self, req: &Request<B>) -> Pass {
        let host = req.headers().get(HOST).map(|h| h.to_str().unwrap_or("\u{0}"));
        if let Some(host) = host {
            if !self.host_allowed(host) {
                return Pass::Refused("Host not allowed (see allowed_hosts)");
            }
        }
        let Some(origin) = req.headers().get(ORIGIN) else {
            return Pass::Plain;
        };
        let normalized = origin.to_str().ok().and_then(normalize_origin);
        let same = match (&normalized, host) {
            (Some(o), Some(h)) => normalize_origin(&format!("{}://{h}", self.scheme)).is_some_and(|own| &own == o),
            _ => false,
        };
        if same {
            return Pass::Plain;
        }
        let listed = match (&self.origins, &normalized) {
            (Origins::Any, _) => true,
            (Origins::List(list), Some(o)) => list.contains(o),
            _ => false,
        };
        if listed {
            Pass::Cors(origin.clone())
        } else {
            Pass::Refused("cross-origin request refused (see allowed_origins)")
        }
    }

    fn host_allowed(&self, header: &str) -> bool {
        if matches!(self.hosts, Hosts::Any) {
            return true;
        }
        let Some((host, _port)) = split_host_port(header.trim()) else {
            return false;
        };
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok();
        }
        if host.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") || self.own_names.contains(&name) {
            return true;
        }
        match &self.hosts {
            Hosts::List(list) => list.iter().any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => {
                    name.len() > suffix.len() + 1 && name.ends_with(suffix) && {
                        name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
                    }
                }
                None => *pattern == name,
            }),
            _ => false,
        }
    }
}

/// The answer to a CORS preflight from an allowed origin.
pub fn preflight(origin: HeaderValue) -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(hyper::header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, DELETE"));
    h.insert(hyper::header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Authorization, Content-Type"));
    h.insert(hyper::header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    h.insert(hyper::header::VARY, HeaderValue::from_static("Origin"));
    r
}

/// CORS headers on an allowed cross-origin answer.
pub fn allow(response: &mut Response<Body>, origin: HeaderValue) {
    let h = response.headers_mut();
    h.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(hyper::header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Perimeter};

    fn gate(toml: &str) -> Gate {
        let c = Config::from_toml(toml, &[("X", "")]).unwrap();
        let p: &Perimeter = &c.perimeter;
        let mut g = Gate::new(p);
        g.own_names = vec!["gw1.local".into(), "gw1".into()];
        g
    }

    fn req(host: Option<&str>, origin: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri("/ws");
        if let Some(h) = host {
            b = b.header("Host", h);
        }
        if let Some(o) = origin {
            b = b.header("Origin", o);
        }
        b.body(()).unwrap()
    }

    fn status(g: &Gate, host: Option<&str>, origin: Option<&str>) -> u16 {
        match g.check(&req(host, origin)) {
            Pass::Plain => 200,
            Pass::Cors(_) => 204,
            Pass::Refused(_) => 403,
        }
    }

    #[test]
    fn hosts_literals_local_names_and_configured() {
        let g = gate("allowed_hosts = [\"scada.plant.example\", \"*.gw.example\"]");
        for ok in [
            "127.0.0.1:18904",
            "[::1]:18904",
            "10.1.2.3",
            "localhost:18904",
            "app.localhost",
            "GW1:18904",
            "gw1.local",
            "scada.plant.example:443",
            "a.gw.example",
        ] {
            assert_eq!(status(&g, Some(ok), None), 200, "{ok}");
        }
        for bad in ["evil.example", "gw.example", "xgw.example", "scada.plant.example.evil", "[zz]", "a b"] {
            assert_eq!(status(&g, Some(bad), None), 403, "{bad}");
        }
        // Not a browser: no Host at all.
        assert_eq!(status(&g, None, None), 200);
        assert_eq!(status(&gate("allowed_hosts = [\"*\"]"), Some("evil.example"), None), 200);
    }

    #[test]
    fn origins_same_listed_or_refused() {
        let g = gate("allowed_origins = [\"https://hmi.plant.example\"]");
        assert_eq!(status(&g, Some("127.0.0.1:18904"), Some("http://127.0.0.1:18904")), 200);
        assert_eq!(status(&g, Some("localhost"), Some("http://localhost:80")), 200);
        assert_eq!(status(&g, Some("127.0.0.1:18904"), Some("https://hmi.plant.example")), 204);
        for foreign in ["http://127.0.0.1:9999", "https://127.0.0.1:18904", "null", "http://evil.example", "garbage"] {
            assert_eq!(status(&g, Some("127.0.0.1:18904"), Some(foreign)), 403, "{foreign}");
        }
        let any = gate("allowed_origins = [\"*\"]");
        assert_eq!(status(&any, Some("127.0.0.1:18904"), Some("null")), 204);
        let null = gate("allowed_origins = [\"null\"]");
        assert_eq!(status(&null, Some("127.0.0.1:18904"), Some("null")), 204);
    }
}

//! Target URLs: `local`, `ssh://user:pass@host:port`, `ssh://user@host:port`.
//!
//! A password may hold `,` `@` `:` `/` when percent-encoded (`%2C` `%40` `%3A` `%2F`);
//! an unencoded `@` in the password also works, as the last `@` ends the user info.
//! Nothing here ever puts a password into an error message: errors quote the URL
//! through [`mask_url`].

use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use super::Secret;

/// What to monitor.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as configured with the password replaced by `***`: the key of this
    /// target in `metrics_update` and the REST API.
    pub key: String,
    pub kind: TargetKind,
}

#[derive(Debug, Clone)]
pub enum TargetKind {
    /// The machine monserv runs on, read from /proc directly.
    Local,
    Ssh(SshTarget),
    /// A Go MonServ agent: `http://host[:port][/path]` (9123, `/metrics` by default).
    Agent(super::HttpUrl),
}

#[derive(Debug, Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: SshAuth,
}

#[derive(Debug, Clone)]
pub enum SshAuth {
    Password(Secret),
    /// Private key file (OpenSSH or PKCS#8, unencrypted).
    Key(PathBuf),
}

/// Replace the password of anything URL-shaped with `***`, whatever its shape.
/// Safe on any input. Besides `scheme://user:password@host`, it covers the pieces an
/// unencoded `,` in a password leaves when `SERVERS` is split there:
/// `ssh://user:passw` (no `@`: anything after a `:` that is not a port is masked)
/// and `ord@host` (no scheme: the user info may be the rest of a password).
pub fn mask_url(url: &str) -> String {
    let (prefix, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    if let Some(at) = rest.rfind('@') {
        let userinfo = &rest[..at];
        return match userinfo.find(':') {
            Some(colon) => format!("{prefix}{}:***@{}", &userinfo[..colon], &rest[at + 1..]),
            None if prefix.is_empty() => format!("***@{}", &rest[at + 1..]),
            None => url.to_string(),
        };
    }
    if prefix.is_empty() || rest.starts_with('[') {
        return url.to_string();
    }
    match rest.find(':') {
        Some(colon) => {
            let port = rest[colon + 1..].split('/').next().unwrap_or_default();
            if port.bytes().all(|b| b.is_ascii_digit()) {
                url.to_string()
            } else {
                format!("{prefix}{}:***", &rest[..colon])
            }
        }
        None => url.to_string(),
    }
}

/// Why a target URL was refused. Never holds a password: the URL is masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not shown at all: a piece without a scheme is most often the tail of a
    /// password that held an unencoded ',' and split `SERVERS` there.
    #[error(
        "a target of {chars} characters has no scheme (not shown, in case it is part of a password; \
         expected \"ssh://user[:password]@host[:port]\" or \"local\"; percent-encode ',' as %2C in passwords)"
    )]
    NoScheme { chars: usize },
    #[error("target {masked:?}: unsupported scheme (expected \"ssh://user[:password]@host[:port]\", \"http://agent[:port]\" or \"local\")")]
    UnsupportedScheme { masked: String },
    #[error("target {masked:?}: {why}")]
    Invalid { masked: String, why: String },
}

/// Parse one target. `identity` is the key file for a password-less SSH target.
pub fn parse_target(url: &str, identity: Option<PathBuf>) -> Result<Target, TargetError> {
    let url = url.trim();
    if url.eq_ignore_ascii_case("local") {
        return Ok(Target { key: "local".into(), kind: TargetKind::Local });
    }
    let masked = mask_url(url);
    let bad = |why: &str| TargetError::Invalid { masked: masked.clone(), why: why.to_string() };
    if !url.contains("://") {
        return Err(TargetError::NoScheme { chars: url.chars().count() });
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        let agent = super::url::parse_http_url_with(url, Some(9123), "/metrics").map_err(|why| bad(&why))?;
        if agent.tls {
            return Err(bad("agent targets speak plain HTTP (the Go agent has no TLS); use http://"));
        }
        return Ok(Target { key: url.to_string(), kind: TargetKind::Agent(agent) });
    }
    let Some(rest) = url.strip_prefix("ssh://") else {
        return Err(TargetError::UnsupportedScheme { masked });
    };
    let at = rest.rfind('@').ok_or_else(|| bad("missing user (expected ssh://user@host)"))?;
    let (userinfo, hostport) = (&rest[..at], rest[at + 1..].trim_end_matches('/'));
    let (user_raw, pass_raw) = match userinfo.find(':') {
        Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
        None => (userinfo, None),
    };
    let decode = |s: &str, what: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| bad(&format!("{what} is not valid UTF-8 after percent-decoding")))
    };
    let user = decode(user_raw, "user")?;
    if user.is_empty() {
        return Err(bad("empty user"));
    }
    let (host, port) = split_host_port(hostport).map_err(|why| bad(&why))?;
    let auth =
        match pass_raw {
            Some(p) => {
                let password = decode(p, "password")?;
                if password.is_empty() {
                    return Err(bad("empty password"));
                }
                SshAuth::Password(Secret::new(password))
            }
            None => SshAuth::Key(identity.ok_or_else(|| {
                bad("no password and no identity_file (set identity_file globally or for this target)")
            })?),
        };
    Ok(Target { key: masked, kind: TargetKind::Ssh(SshTarget { host, port, user, auth }) })
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let end = v6.find(']').ok_or("unclosed '[' in IPv6 address")?;
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after IPv6 address")),
        };
        let host = &v6[..end];
        host.parse::<std::net::Ipv6Addr>().map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        (host, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')) {
        return Err(format!("host {host:?} has characters not allowed in a host name"));
    }
    let port = match port {
        None => 22,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("port {p:?} is not a number from 1 to 65535")),
            Ok(n) => n,
        },
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh(t: &Target) -> &SshTarget {
        match &t.kind {
            TargetKind::Ssh(s) => s,
            TargetKind::Local | TargetKind::Agent(_) => panic!("expected ssh"),
        }
    }

    #[test]
    fn password_target_is_masked_and_decoded() {
        let t = parse_target("ssh://scada:p%40ss%2Cw%3Ard@192.168.4.3:2222", None).unwrap();
        assert_eq!(t.key, "ssh://scada:***@192.168.4.3:2222");
        let s = ssh(&t);
        assert_eq!((s.host.as_str(), s.port, s.user.as_str()), ("192.168.4.3", 2222, "scada"));
        match &s.auth {
            SshAuth::Password(p) => assert_eq!(p.expose(), "p@ss,w:rd"),
            SshAuth::Key(_) => panic!("expected password"),
        }
    }

    #[test]
    fn raw_at_in_password_and_default_port() {
        let t = parse_target("ssh://u:a@b@host", None).unwrap();
        assert_eq!(t.key, "ssh://u:***@host");
        assert_eq!(ssh(&t).port, 22);
    }

    #[test]
    fn key_target_needs_identity() {
        let e = parse_target("ssh://u@h:22", None).unwrap_err().to_string();
        assert!(e.contains("identity_file"), "{e}");
        let t = parse_target("ssh://u@[::1]:2200", Some("/k".into())).unwrap();
        assert_eq!(t.key, "ssh://u@[::1]:2200");
        assert_eq!(ssh(&t).host, "::1");
    }

    #[test]
    fn errors_never_show_password() {
        for bad in [
            "http://u:hunter2@h",
            "ssh://u:hunter2@h:99999",
            "ssh://u:hunter2@h:0",
            "ssh://u:hunter2@",
            "ssh://:hunter2@h",
            "ssh://u:hunter2@h st",
            "ssh://u:hunter2@[::1",
        ] {
            let e = parse_target(bad, None).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("***"), "{e}");
        }
        assert!(matches!(parse_target("ftp://h", None), Err(TargetError::UnsupportedScheme { .. })));
        assert_eq!(parse_target("LOCAL", None).unwrap().key, "local");
    }

    #[test]
    fn agent_targets() {
        let t = parse_target("http://10.1.2.3", None).unwrap();
        assert_eq!(t.key, "http://10.1.2.3");
        let TargetKind::Agent(url) = t.kind else { panic!("expected an agent") };
        assert_eq!(url.to_string(), "http://10.1.2.3:9123/metrics");
        let e = parse_target("http://u:pw@10.1.2.3", None).unwrap_err().to_string();
        assert!(e.contains("credentials") && !e.contains("pw@"), "{e}");
    }

    #[test]
    fn mask_url_is_total() {
        assert_eq!(mask_url("no url"), "no url");
        assert_eq!(mask_url("ssh://u@h"), "ssh://u@h");
        assert_eq!(mask_url("ssh://u:x:y@h"), "ssh://u:***@h");
        assert_eq!(mask_url("ssh://h:2222"), "ssh://h:2222");
        assert_eq!(mask_url("ssh://[::1]:22"), "ssh://[::1]:22");
        // The pieces of `ssh://scada:PASS,WORD@h` split at the comma.
        assert_eq!(mask_url("ssh://scada:PASS"), "ssh://scada:***");
        assert_eq!(mask_url("WORD@h:22"), "***@h:22");
    }

    #[test]
    fn a_password_split_by_an_unencoded_comma_is_never_shown() {
        // SERVERS="ssh://scada:se,cr,et@h" splits into three pieces.
        for piece in ["ssh://scada:se", "cr", "et@h"] {
            let e = parse_target(piece, None).unwrap_err().to_string();
            for secret in ["se", "cr", "et"] {
                assert!(!e.contains(&format!("{secret}\"")) && !e.contains(&format!(":{secret}")), "{piece}: {e}");
            }
        }
        assert_eq!(
            parse_target("ssh://scada:se", None).unwrap_err().to_string(),
            "target \"ssh://scada:***\": missing user (expected ssh://user@host)"
        );
        assert_eq!(parse_target("cr", None).unwrap_err(), TargetError::NoScheme { chars: 2 });
    }
}

//! The email sink: a small SMTP client (RFC 5321) with implicit TLS (465) or
//! STARTTLS (anything else; a server that does not offer it is refused, never a
//! silent downgrade), AUTH PLAIN or LOGIN, and one plain-text message per delivery.
//!
//! The message is built by pure functions (headers, RFC 2047 subject, base64 body,
//! so no line is too long and no host-controlled text can inject a header or end
//! the DATA early). 4xx replies and I/O errors are retried, 5xx are permanent.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{text, SendError};
use crate::config::{EmailSink, SmtpTls};
use crate::store::alerts::Transition;
use crate::tls::Stream;

const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 100;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A header value: as is when it is short printable ASCII, else RFC 2047 encoded
/// words (UTF-8, base64), which also neutralises CR/LF from host-controlled text.
fn header_text(value: &str) -> String {
    if value.len() <= 900 && value.bytes().all(|b| (0x20..0x7f).contains(&b)) && !value.contains("=?") {
        return value.to_string();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() || words.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", base64(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

/// `Wed, 02 Dec 2026 10:00:00 +0000`
fn rfc5322_date(t: SystemTime) -> String {
    let iso = crate::model::rfc3339_utc(t); // 2026-12-02T10:00:00Z
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][((secs / 86_400) % 7) as usize];
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m: usize = iso.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    format!(
        "{weekday}, {} {} {} {} +0000",
        iso.get(8..10).unwrap_or("01"),
        month[m.clamp(1, 12) - 1],
        iso.get(0..4).unwrap_or("1970"),
        iso.get(11..19).unwrap_or("00:00:00")
    )
}

/// The whole message (headers and base64 body), CRLF line ends, ready for DATA.
pub fn message(sink: &EmailSink, batch: &[Transition], now: SystemTime) -> Vec<u8> {
    let (subject, body) = text::render(batch);
    let seq = batch.first().map_or(0, |t| t.seq);
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let domain = sink.from.rsplit('@').next().unwrap_or("monserv");
    let mut m = String::new();
    m.push_str(&format!("From: monserv <{}>\r\n", sink.from));
    m.push_str(&format!("To: {}\r\n", sink.to.join(", ")));
    m.push_str(&format!("Subject: {}\r\n", header_text(&subject)));
    m.push_str(&format!("Date: {}\r\n", rfc5322_date(now)));
    m.push_str(&format!("Message-ID: <monserv.{seq}.{secs}.{}@{domain}>\r\n", rand::random::<u32>()));
    m.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n");
    m.push_str("Auto-Submitted: auto-generated\r\n\r\n");
    let body = body.replace("\r\n", "\n").replace('\n', "\r\n");
    let encoded = base64(body.as_bytes());
    for line in encoded.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(line).unwrap_or_default());
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// One SMTP reply: its code and its text (lines joined).
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        crate::rules::output::escape_controls(self.lines.join(" / "), false, &mut false)
    }
}

/// Parse one reply line: `250-PIPELINING` is (250, more, "PIPELINING").
pub fn parse_reply_line(line: &str) -> Option<(u16, bool, &str)> {
    let line = line.trim_end_matches(['\r', '\n']);
    let code = line.get(..3)?.parse::<u16>().ok().filter(|c| (200..600).contains(c))?;
    match line.as_bytes().get(3) {
        None => Some((code, false, "")),
        Some(b' ') => Some((code, false, &line[4..])),
        Some(b'-') => Some((code, true, &line[4..])),
        _ => None,
    }
}

struct Session {
    io: BufReader<Box<dyn Stream>>,
    server: String,
}

impl Session {
    async fn read_reply(&mut self) -> Result<Reply, SendError> {
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = AsyncReadExt::take(&mut self.io, MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|e| self.io_err(e))?;
            if n == 0 {
                return Err(SendError::Retry(format!("{}: connection closed", self.server)));
            }
            let line = String::from_utf8_lossy(&buf).into_owned();
            let Some((code, more, text)) = parse_reply_line(&line) else {
                return Err(SendError::Retry(format!("{}: not an SMTP reply: {:?}", self.server, text::cut(line, 80))));
            };
            lines.push(text.to_string());
            if !more {
                return Ok(Reply { code, lines });
            }
            if lines.len() > MAX_REPLY_LINES {
                return Err(SendError::Retry(format!("{}: reply too long", self.server)));
            }
        }
    }

    fn io_err(&self, e: std::io::Error) -> SendError {
        SendError::Retry(format!("{}: {e}", self.server))
    }

    /// Send `line` (logged as `shown`: never a credential) and expect `want`.
    async fn command(&mut self, line: &str, shown: &str, want: &[u16]) -> Result<Reply, SendError> {
        self.io.get_mut().write_all(format!("{line}\r\n").as_bytes()).await.map_err(|e| self.io_err(e))?;
        self.io.get_mut().flush().await.map_err(|e| self.io_err(e))?;
        self.expect(shown, want).await
    }

    async fn expect(&mut self, shown: &str, want: &[u16]) -> Result<Reply, SendError> {
        let reply = self.read_reply().await?;
        if want.contains(&reply.code) {
            return Ok(reply);
        }
        let why = format!("{}: {shown} answered {} {}", self.server, reply.code, reply.text());
        Err(if reply.code >= 500 { SendError::Permanent(why) } else { SendError::Retry(why) })
    }
}

fn ehlo_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name.trim().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-')).collect();
    if name.is_empty() {
        "monserv".into()
    } else {
        name
    }
}

fn has_ext(ehlo: &Reply, ext: &str) -> bool {
    ehlo.lines.iter().skip(1).any(|l| l.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case(ext)))
}

fn auth_mechs(ehlo: &Reply) -> Vec<String> {
    ehlo.lines
        .iter()
        .skip(1)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let first = words.next()?;
            (first.eq_ignore_ascii_case("AUTH") || first.eq_ignore_ascii_case("AUTH="))
                .then(|| words.map(|w| w.to_ascii_uppercase()).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// Deliver one message for `batch`.
pub async fn send(sink: &EmailSink, tls: &Arc<rustls::ClientConfig>, batch: &[Transition]) -> Result<(), SendError> {
    let server = format!("smtp {}:{}", sink.host, sink.port);
    match tokio::time::timeout(SESSION_TIMEOUT, session(sink, tls, batch, &server)).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Retry(format!("{server}: timed out"))),
    }
}

async fn session(
    sink: &EmailSink,
    tls: &Arc<rustls::ClientConfig>,
    batch: &[Transition],
    server: &str,
) -> Result<(), SendError> {
    let implicit = sink.tls == SmtpTls::Implicit;
    let stream = crate::tls::connect(&sink.host, sink.port, implicit.then_some(tls))
        .await
        .map_err(|e| SendError::Retry(format!("{server}: cannot connect: {e}")))?;
    let mut s = Session { io: BufReader::new(stream), server: server.to_string() };
    s.expect("greeting", &[220]).await?;
    let hello = format!("EHLO {}", ehlo_name());
    let mut ehlo = s.command(&hello, "EHLO", &[250]).await?;
    if !implicit {
        if !has_ext(&ehlo, "STARTTLS") {
            return Err(SendError::Permanent(format!(
                "{server} does not offer STARTTLS; refusing to send in clear (use port 465 for implicit TLS)"
            )));
        }
        s.command("STARTTLS", "STARTTLS", &[220]).await?;
        // Anything the server sent past its 220 would be read as if it came over TLS.
        if !s.io.buffer().is_empty() {
            return Err(SendError::Retry(format!("{server}: data after STARTTLS reply (refused)")));
        }
        let plain = s.io.into_inner();
        let secured = crate::tls::wrap(tls, &sink.host, plain)
            .await
            .map_err(|e| SendError::Retry(format!("{server}: TLS: {e}")))?;
        s = Session { io: BufReader::new(Box::new(secured)), server: server.to_string() };
        ehlo = s.command(&hello, "EHLO", &[250]).await?;
    }
    if let Some(password) = &sink.password {
        let mechs = auth_mechs(&ehlo);
        if mechs.iter().any(|m| m == "PLAIN") {
            let token = base64(format!("\0{}\0{}", sink.user, password.expose()).as_bytes());
            s.command(&format!("AUTH PLAIN {token}"), "AUTH PLAIN", &[235]).await?;
        } else if mechs.iter().any(|m| m == "LOGIN") {
            s.command("AUTH LOGIN", "AUTH LOGIN", &[334]).await?;
            s.command(&base64(sink.user.as_bytes()), "AUTH LOGIN user", &[334]).await?;
            s.command(&base64(password.expose().as_bytes()), "AUTH LOGIN password", &[235]).await?;
        } else {
            return Err(SendError::Permanent(format!(
                "{server} offers no AUTH PLAIN or LOGIN (offers: {})",
                if mechs.is_empty() { "none".into() } else { mechs.join(" ") }
            )));
        }
    }
    s.command(&format!("MAIL FROM:<{}>", sink.from), "MAIL FROM", &[250]).await?;
    let mut accepted = 0;
    let mut refused = Vec::new();
    for to in &sink.to {
        match s.command(&format!("RCPT TO:<{to}>"), "RCPT TO", &[250, 251]).await {
            Ok(_) => accepted += 1,
            Err(SendError::Permanent(why)) => refused.push(why),
            Err(e) => return Err(e),
        }
    }
    if accepted == 0 {
        return Err(SendError::Permanent(refused.join("; ")));
    }
    for why in &refused {
        tracing::warn!(reason = %why, "a recipient was refused; sent to the others");
    }
    s.command("DATA", "DATA", &[354]).await?;
    let mut data = message(sink, batch, SystemTime::now());
    data.extend_from_slice(b".\r\n");
    s.io.get_mut().write_all(&data).await.map_err(|e| s.io_err(e))?;
    s.io.get_mut().flush().await.map_err(|e| s.io_err(e))?;
    s.expect("end of DATA", &[250]).await?;
    let _ = s.command("QUIT", "QUIT", &[221]).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn base64_matches_rfc4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply_line("250-PIPELINING\r\n"), Some((250, true, "PIPELINING")));
        assert_eq!(parse_reply_line("250 OK"), Some((250, false, "OK")));
        assert_eq!(parse_reply_line("220"), Some((220, false, "")));
        assert_eq!(parse_reply_line("hello"), None);
        assert_eq!(parse_reply_line("250xOK"), None);
        let ehlo = Reply { code: 250, lines: vec!["mx".into(), "AUTH LOGIN PLAIN".into(), "STARTTLS".into()] };
        assert_eq!(auth_mechs(&ehlo), ["LOGIN", "PLAIN"]);
        assert!(has_ext(&ehlo, "starttls") && !has_ext(&ehlo, "8BITMIME"));
    }

    #[test]
    fn host_text_cannot_inject_headers_or_end_data() {
        let sink = EmailSink {
            host: "m".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            from: "monserv@plant".into(),
            user: "monserv@plant".into(),
            password: Some(Secret::new("p")),
            to: vec!["ops@plant".into()],
        };
        let t = Transition {
            seq: 3,
            time: 0,
            rule: "r".into(),
            key: "h".into(),
            alert_type: "alert".into(),
            subject: "[ALERT] x\r\nBcc: evil@example.com".into(),
            message: "line\n.\nQUIT".into(),
            silenced: false,
            repeat: false,
        };
        let m = String::from_utf8(message(&sink, &[t], UNIX_EPOCH + Duration::from_secs(1_796_205_600))).unwrap();
        let headers = m.split("\r\n\r\n").next().unwrap();
        assert!(!headers.lines().any(|l| l.starts_with("Bcc")), "{headers}");
        assert!(headers.contains("Subject: =?UTF-8?B?"));
        assert!(headers.contains("Date: Wed, 02 Dec 2026 10:00:00 +0000"), "{headers}");
        assert!(!m.contains("\r\n.\r\n"), "the body cannot end DATA");
        assert!(m.lines().all(|l| l.len() <= 998));
        assert_eq!(header_text("[ALERT] plain"), "[ALERT] plain");
    }
}

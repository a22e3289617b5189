//! What people read: one transition as a subject and a plain-text body, or several
//! (a storm past a sink's `max_per_minute`) as one digest. Shared by email, Slack
//! and Telegram so they tell the same story.

use std::time::{Duration, UNIX_EPOCH};

use crate::store::alerts::Transition;

/// Lines of a digest; the rest is counted, not listed (the history has them all).
pub const DIGEST_LINES: usize = 100;

pub fn time_of(t: &Transition) -> String {
    crate::model::rfc3339_utc(UNIX_EPOCH + Duration::from_secs(t.time))
}

pub fn state_of(t: &Transition) -> &'static str {
    match (t.alert_type.as_str(), t.repeat) {
        ("recovery", _) => "RECOVERED",
        (_, true) => "ALERT (still firing)",
        _ => "ALERT",
    }
}

/// Subject and body of one message for `batch` (one transition, or a digest).
pub fn render(batch: &[Transition]) -> (String, String) {
    match batch {
        [t] => {
            let body = format!(
                "{}\n\nHost: {}\nState: {}\nTime: {}\nRule: {}\nKey: {}\n",
                t.message,
                t.host(),
                state_of(t),
                time_of(t),
                t.rule,
                t.key
            );
            (t.subject.clone(), body)
        }
        _ => {
            let alerts = batch.iter().filter(|t| t.alert_type != "recovery").count();
            let subject = format!(
                "[monserv] {} alert changes: {} ALERT, {} RECOVERED",
                batch.len(),
                alerts,
                batch.len() - alerts
            );
            let mut body =
                String::from("More alert changes than this channel's rate limit; grouped into one message.\n\n");
            for t in batch.iter().take(DIGEST_LINES) {
                let mut line = format!("{} {} {}: {}", time_of(t), state_of(t), t.host(), t.subject);
                if line.len() > 300 {
                    let mut cut = 297;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.truncate(cut);
                    line.push_str("...");
                }
                body.push_str(&line);
                body.push('\n');
            }
            if batch.len() > DIGEST_LINES {
                body.push_str(&format!("... and {} more (GET /api/v1/alerts/history)\n", batch.len() - DIGEST_LINES));
            }
            (subject, body)
        }
    }
}

/// Cut `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn transition(seq: u64, key: &str, kind: &str) -> Transition {
        Transition {
            seq,
            time: 1_700_000_000 + seq,
            rule: "threshold".into(),
            key: key.into(),
            alert_type: kind.into(),
            subject: format!("[{}] {key}", if kind == "alert" { "ALERT" } else { "RECOVERED" }),
            message: "Disk usage 97.0% >= 90%".into(),
            silenced: false,
            repeat: false,
        }
    }

    #[test]
    fn one_and_many() {
        let (subject, body) = render(&[transition(1, "plc-7/disk:/", "alert")]);
        assert_eq!(subject, "[ALERT] plc-7/disk:/");
        assert!(
            body.starts_with("Disk usage 97.0% >= 90%\n\nHost: plc-7\nState: ALERT\nTime: 2023-11-14T22:13:21Z\n"),
            "{body}"
        );
        let many: Vec<Transition> =
            (0..150).map(|i| transition(i, &format!("h{i}"), if i % 3 == 0 { "recovery" } else { "alert" })).collect();
        let (subject, body) = render(&many);
        assert_eq!(subject, "[monserv] 150 alert changes: 100 ALERT, 50 RECOVERED");
        assert_eq!(body.lines().filter(|l| l.contains("Z RECOVERED h") || l.contains("Z ALERT h")).count(), 100);
        assert!(body.ends_with("... and 50 more (GET /api/v1/alerts/history)\n"));
        assert_eq!(cut("ééé".into(), 4), "...");
        assert_eq!(cut("abc".into(), 3), "abc");
    }
}

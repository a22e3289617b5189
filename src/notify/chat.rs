//! Slack (incoming webhook) and Telegram (Bot API `sendMessage`) bodies, as the Go
//! MonServ sent them: Slack `{"text":"*<subject>*\n<message>"}`, Telegram
//! `{"chat_id","text":"<subject>\n<message>"}`, plain text. Host-controlled text is
//! escaped for Slack (`<!channel>` in a mount point must not page everyone).

use super::text;
use crate::store::alerts::Transition;

/// Telegram refuses texts over 4096 characters; Slack truncates past 40,000.
const TELEGRAM_MAX: usize = 4000;
const SLACK_MAX: usize = 38_000;

/// Slack's three control characters for mrkdwn.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn slack(batch: &[Transition]) -> serde_json::Value {
    let (subject, body) = text::render(batch);
    let subject = slack_escape(&subject).replace('*', "");
    let text = text::cut(format!("*{subject}*\n{}", slack_escape(&body)), SLACK_MAX);
    serde_json::json!({ "text": text })
}

pub fn telegram(chat_id: &str, batch: &[Transition]) -> serde_json::Value {
    let (subject, body) = text::render(batch);
    // A numeric id goes as a number, a @channel name as a string, as the Bot API takes them.
    let chat: serde_json::Value = chat_id.parse::<i64>().map_or_else(|_| chat_id.into(), Into::into);
    serde_json::json!({ "chat_id": chat, "text": text::cut(format!("{subject}\n{body}"), TELEGRAM_MAX) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let t = Transition {
            seq: 0,
            time: 0,
            rule: "threshold".into(),
            key: "h/disk:/mnt/<!channel>".into(),
            alert_type: "alert".into(),
            subject: "[ALERT] disk <!channel> *bold*".into(),
            message: "a & b".into(),
            silenced: false,
            repeat: false,
        };
        let s = slack(std::slice::from_ref(&t));
        let text = s["text"].as_str().unwrap();
        assert!(text.starts_with("*[ALERT] disk &lt;!channel&gt; bold*\na &amp; b\n"), "{text}");
        assert!(!text.contains("<!"));
        let tg = telegram("-1001", std::slice::from_ref(&t));
        assert_eq!(tg["chat_id"], -1001);
        assert!(tg["text"].as_str().unwrap().starts_with("[ALERT] disk <!channel> *bold*\na & b\n"));
        assert_eq!(telegram("@plant_ops", &[t])["chat_id"], "@plant_ops");
    }
}

//! The webhook and Alertmanager sinks.
//!
//! The webhook gets Alertmanager webhook v4 messages, so receivers written for
//! Alertmanager work unchanged: one transition per message, or every transition of
//! a digest in one message's `alerts`. The Alertmanager sink posts to an existing
//! Alertmanager's `POST /api/v2/alerts`, as Prometheus does: firing alerts carry an
//! `endsAt` a few minutes ahead and are re-posted every minute while they fire (so
//! Alertmanager resolves them by itself if monserv goes away), recoveries carry the
//! time they ended.

use std::time::{Duration, UNIX_EPOCH};

use crate::store::alerts::{Firing, Transition};

/// How often firing alerts are re-posted to Alertmanager, and how far ahead their
/// `endsAt` lies (four refreshes, as Prometheus does).
pub const AM_REFRESH: Duration = Duration::from_secs(60);
const AM_ENDS_AHEAD: u64 = 4 * 60;

fn rfc3339(secs: u64) -> String {
    crate::model::rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs))
}

fn labels(rule: &str, key: &str) -> serde_json::Value {
    let host = crate::store::silence::host_of(key);
    serde_json::json!({ "alertname": rule, "key": key, "host": host, "source": "monserv" })
}

/// The Alertmanager webhook v4 body for `batch` (one transition, or a digest).
pub fn payload(batch: &[Transition]) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = batch
        .iter()
        .map(|t| {
            let at = rfc3339(t.time);
            let (status, ends_at) = match t.alert_type.as_str() {
                "recovery" => ("resolved", at.clone()),
                _ => ("firing", "0001-01-01T00:00:00Z".to_string()),
            };
            serde_json::json!({
                "status": status,
                "labels": labels(&t.rule, &t.key),
                "annotations": { "subject": t.subject, "message": t.message },
                "startsAt": at,
                "endsAt": ends_at,
                "generatorURL": "",
                "fingerprint": format!("{:016x}", crate::model::fnv1a(format!("{}\0{}", t.rule, t.key).as_bytes())),
            })
        })
        .collect();
    let firing = batch.iter().any(|t| t.alert_type != "recovery");
    let status = if firing { "firing" } else { "resolved" };
    let (common_labels, common_annotations, group_key) = match batch {
        [t] => (
            labels(&t.rule, &t.key),
            serde_json::json!({ "subject": t.subject, "message": t.message }),
            format!("{{}}:{{alertname=\"{}\", key=\"{}\"}}", t.rule, t.key),
        ),
        _ => (serde_json::json!({ "source": "monserv" }), serde_json::json!({}), "{}:{source=\"monserv\"}".into()),
    };
    let groups = match batch {
        [t] => serde_json::json!({ "alertname": t.rule }),
        _ => serde_json::json!({}),
    };
    let seqs: Vec<u64> = batch.iter().map(|t| t.seq).collect();
    let kinds: Vec<&str> = batch.iter().map(|t| if t.repeat { "repeat" } else { t.alert_type.as_str() }).collect();
    serde_json::json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "monserv",
        "groupLabels": groups,
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": "",
        "alerts": alerts,
        "monserv": { "seq": seqs.first(), "seqs": seqs, "alert_type": kinds.first(), "alert_types": kinds },
    })
}

/// `POST /api/v2/alerts` body for transitions: firing ones end a few minutes after
/// `now` unless refreshed, recoveries at the time they recovered.
pub fn am_transitions(batch: &[Transition], now: u64) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = batch
        .iter()
        .map(|t| {
            let ends = if t.alert_type == "recovery" { t.time } else { now.max(t.time) + AM_ENDS_AHEAD };
            serde_json::json!({
                "labels": labels(&t.rule, &t.key),
                "annotations": { "subject": t.subject, "message": t.message },
                "startsAt": rfc3339(t.time),
                "endsAt": rfc3339(ends),
            })
        })
        .collect();
    serde_json::Value::Array(alerts)
}

/// The refresh of every firing alert (not silenced), in one `POST /api/v2/alerts`.
pub fn am_refresh(firing: &[Firing], now: u64) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = firing
        .iter()
        .map(|f| {
            serde_json::json!({
                "labels": labels(&f.rule, &f.key),
                "annotations": { "subject": f.subject, "message": f.message },
                "startsAt": rfc3339(f.since),
                "endsAt": rfc3339(now + AM_ENDS_AHEAD),
            })
        })
        .collect();
    serde_json::Value::Array(alerts)
}

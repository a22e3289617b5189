//! Alert state that survives a restart, a `kill -9` or a power cut: which keys are
//! firing (with their subject, message and since-time) and a bounded history of
//! transitions.
//!
//! One redb file under `state_dir` (copy-on-write B-trees, crash-safe commits). A
//! round's transitions are written in one transaction, and only rounds that have any:
//! an idle gateway writes nothing, a steady one only on changes (flash). The commit
//! happens before the round's messages are sent, so a transition that went out is
//! never forgotten. A file that cannot be opened (corrupt, or from an incompatible
//! version) is renamed aside with one clear log line and monserv starts fresh rather
//! than crash-looping.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// (rule, key) -> JSON of [`Firing`].
const ACTIVE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("active");
/// Sequence number -> JSON of [`Transition`].
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// (sink, sequence number) -> empty: deliveries not yet accepted (the transition is in
/// HISTORY; stores written before kept a JSON copy here, still read).
const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
/// Rule name -> the rule's own key-value state (JSON), saved on change.
const RULE_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("rule_state");

/// Deliveries kept per sink while it is unreachable; past it the oldest are dropped
/// (counted and logged by the notifier).
pub const OUTBOX_LIMIT: u64 = 10_000;

/// Transitions kept in the history; older ones are dropped in the same transaction.
pub const HISTORY_LIMIT: u64 = 10_000;

/// A firing alert as stored and as `GET /api/v1/alerts/active` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    pub rule: String,
    pub key: String,
    pub subject: String,
    pub message: String,
    /// Seconds since the Unix epoch when it fired.
    pub since: u64,
}

/// One alert or recovery, as `GET /api/v1/alerts/history` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: u64,
    pub rule: String,
    pub key: String,
    /// `alert` or `recovery`.
    pub alert_type: String,
    pub subject: String,
    pub message: String,
    /// A silence matched it: recorded, not sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silenced: bool,
    /// Not a transition: an alert still firing, sent again (`repeat_interval`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeat: bool,
}

impl Transition {
    pub fn host(&self) -> &str {
        super::silence::host_of(&self.key)
    }
}

/// What one round changed, to be committed together.
#[derive(Debug, Default)]
pub struct Changes {
    pub fired: Vec<Firing>,
    /// (rule, key, subject, message) of alerts that recovered.
    pub recovered: Vec<(String, String, String, String)>,
    /// Rules whose whole state goes (unloaded rules), their own state included.
    pub forgotten_rules: Vec<String>,
    /// Rules' own states that changed (none: emptied).
    pub rule_states: Vec<(String, Option<Vec<u8>>)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.fired.is_empty()
            && self.recovered.is_empty()
            && self.forgotten_rules.is_empty()
            && self.rule_states.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("alert store {path}: {reason}")]
    Io { path: String, reason: String },
}

pub struct AlertStore {
    pub(super) db: Database,
    path: PathBuf,
    /// Sinks every transition is queued for, in the same transaction.
    sinks: Vec<String>,
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl AlertStore {
    /// Open (or create) the store at `path`. A file that cannot be used is moved to
    /// `<path>.bad-<unix time>` and a fresh one started. Blocking I/O.
    pub fn open(path: &Path) -> Result<AlertStore, StoreError> {
        Self::open_with_sinks(path, Vec::new())
    }

    /// As [`AlertStore::open`], queueing every transition for `sinks`.
    pub fn open_with_sinks(path: &Path, sinks: Vec<String>) -> Result<AlertStore, StoreError> {
        let err =
            |e: &dyn std::fmt::Display| StoreError::Io { path: path.display().to_string(), reason: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        // Another monserv holding the file is not corruption: never move its store.
        let opened = match Database::create(path) {
            Err(e @ (redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch)) => {
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    reason: format!("{e} (is another monserv using this state directory?)"),
                });
            }
            other => other,
        };
        let db = match opened.map_err(|e| e.to_string()).and_then(|db| Self::ensure_tables(&db).map(|_| db)) {
            Ok(db) => db,
            Err(reason) => {
                let aside = path.with_extension(format!("redb.bad-{}", unix_now()));
                tracing::error!(path = %path.display(), %reason, aside = %aside.display(),
                    "alert store unusable; set aside, starting with no active alerts");
                std::fs::rename(path, &aside).map_err(|e| err(&e))?;
                let db = Database::create(path).map_err(|e| err(&e))?;
                Self::ensure_tables(&db).map_err(|e| err(&e))?;
                db
            }
        };
        Ok(AlertStore { db, path: path.to_path_buf(), sinks })
    }

    fn ensure_tables(db: &Database) -> Result<(), String> {
        // A store that has them all needs no write (and no fsync) at start.
        if Self::has_tables(db) {
            return Ok(());
        }
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(ACTIVE).map_err(|e| e.to_string())?;
        txn.open_table(HISTORY).map_err(|e| e.to_string())?;
        txn.open_table(OUTBOX).map_err(|e| e.to_string())?;
        txn.open_table(RULE_STATE).map_err(|e| e.to_string())?;
        txn.open_table(super::silence::SILENCES).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())
    }

    fn has_tables(db: &Database) -> bool {
        let Ok(txn) = db.begin_read() else { return false };
        txn.open_table(ACTIVE).is_ok()
            && txn.open_table(HISTORY).is_ok()
            && txn.open_table(OUTBOX).is_ok()
            && txn.open_table(RULE_STATE).is_ok()
            && txn.open_table(super::silence::SILENCES).is_ok()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io { path: self.path.display().to_string(), reason: e.to_string() }
    }

    /// Every rule's saved state, by rule name.
    pub fn rule_states(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(RULE_STATE).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Every firing alert. Entries that do not parse are skipped (and logged).
    pub fn active(&self) -> Result<Vec<Firing>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(ACTIVE).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            match serde_json::from_slice::<Firing>(v.value()) {
                Ok(f) => out.push(f),
                Err(e) => {
                    tracing::warn!(rule = k.value().0, key = k.value().1, error = %e, "unreadable active alert skipped")
                }
            }
        }
        out.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Transitions with `time >= since`, newest last, at most `limit` (the newest).
    pub fn history(&self, since: u64, limit: usize) -> Result<Vec<Transition>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(HISTORY).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))?.rev() {
            let (_, v) = entry.map_err(|e| self.err(e))?;
            let Ok(t) = serde_json::from_slice::<Transition>(v.value()) else { continue };
            if t.time < since || out.len() >= limit {
                break;
            }
            out.push(t);
        }
        out.reverse();
        Ok(out)
    }

    /// Commit one round's changes in one transaction. Blocking I/O (fsync).
    pub fn commit(&self, changes: &Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut active = txn.open_table(ACTIVE).map_err(|e| self.err(e))?;
            let mut history = txn.open_table(HISTORY).map_err(|e| self.err(e))?;
            let mut outbox = txn.open_table(OUTBOX).map_err(|e| self.err(e))?;
            let silences = txn.open_table(super::silence::SILENCES).map_err(|e| self.err(e))?;
            let now = unix_now();
            let silences = super::silence::active_silences(&silences, now);
            let mut seq = history.last().map_err(|e| self.err(e))?.map_or(0, |(k, _)| k.value() + 1);
            let mut record = |rule: &str, key: &str, kind: &str, subject: &str, message: &str| {
                let t = Transition {
                    seq,
                    time: now,
                    rule: rule.into(),
                    key: key.into(),
                    alert_type: kind.into(),
                    subject: subject.into(),
                    message: message.into(),
                    silenced: silences.iter().any(|s| s.matches(rule, key, subject)),
                    repeat: false,
                };
                seq += 1;
                serde_json::to_vec(&t).map(|bytes| (t.seq, t.silenced, bytes))
            };
            let mut queue = |n: u64, silenced: bool, t: &[u8]| -> Result<(), StoreError> {
                history.insert(n, t).map_err(|e| self.err(e))?;
                if !silenced {
                    // The delivery is the history entry: the outbox holds only its key.
                    for sink in &self.sinks {
                        outbox.insert((sink.as_str(), n), [].as_slice()).map_err(|e| self.err(e))?;
                    }
                }
                Ok(())
            };
            for f in &changes.fired {
                let bytes = serde_json::to_vec(f).map_err(|e| self.err(e))?;
                active.insert((f.rule.as_str(), f.key.as_str()), bytes.as_slice()).map_err(|e| self.err(e))?;
                let (n, silenced, t) =
                    record(&f.rule, &f.key, "alert", &f.subject, &f.message).map_err(|e| self.err(e))?;
                queue(n, silenced, &t)?;
            }
            for (rule, key, subject, message) in &changes.recovered {
                active.remove((rule.as_str(), key.as_str())).map_err(|e| self.err(e))?;
                let (n, silenced, t) = record(rule, key, "recovery", subject, message).map_err(|e| self.err(e))?;
                queue(n, silenced, &t)?;
            }
            let mut states = txn.open_table(RULE_STATE).map_err(|e| self.err(e))?;
            for (rule, state) in &changes.rule_states {
                match state {
                    Some(bytes) => states.insert(rule.as_str(), bytes.as_slice()).map(|_| ()),
                    None => states.remove(rule.as_str()).map(|_| ()),
                }
                .map_err(|e| self.err(e))?;
            }
            for rule in &changes.forgotten_rules {
                states.remove(rule.as_str()).map_err(|e| self.err(e))?;
                let keys: Vec<String> = active
                    .range((rule.as_str(), "")..)
                    .map_err(|e| self.err(e))?
                    .map_while(|e| e.ok())
                    .take_while(|(k, _)| k.value().0 == rule)
                    .map(|(k, _)| k.value().1.to_string())
                    .collect();
                for key in keys {
                    active.remove((rule.as_str(), key.as_str())).map_err(|e| self.err(e))?;
                }
            }
            // A sink that is down for long keeps the newest OUTBOX_LIMIT deliveries.
            for sink in &self.sinks {
                let len =
                    outbox.range((sink.as_str(), 0)..=(sink.as_str(), u64::MAX)).map_err(|e| self.err(e))?.count();
                let excess = (len as u64).saturating_sub(OUTBOX_LIMIT);
                if excess > 0 {
                    let oldest: Vec<u64> = outbox
                        .range((sink.as_str(), 0)..=(sink.as_str(), u64::MAX))
                        .map_err(|e| self.err(e))?
                        .take(excess as usize)
                        .map_while(|e| e.ok().map(|(k, _)| k.value().1))
                        .collect();
                    for seq in &oldest {
                        outbox.remove((sink.as_str(), *seq)).map_err(|e| self.err(e))?;
                    }
                    tracing::warn!(
                        sink,
                        dropped = oldest.len(),
                        limit = OUTBOX_LIMIT,
                        "sink queue full while the sink is unreachable; oldest deliveries dropped"
                    );
                }
            }
            let excess = history.len().map_err(|e| self.err(e))?.saturating_sub(HISTORY_LIMIT);
            for _ in 0..excess {
                history.pop_first().map_err(|e| self.err(e))?;
            }
            // A delivery whose history entry is gone cannot be sent: drop it, counted.
            let first = history.first().map_err(|e| self.err(e))?.map_or(0, |(k, _)| k.value());
            for sink in &self.sinks {
                let gone: Vec<u64> = outbox
                    .range((sink.as_str(), 0)..(sink.as_str(), first))
                    .map_err(|e| self.err(e))?
                    .map_while(|e| e.ok().map(|(k, _)| k.value().1))
                    .collect();
                for seq in &gone {
                    outbox.remove((sink.as_str(), *seq)).map_err(|e| self.err(e))?;
                }
                if !gone.is_empty() {
                    tracing::warn!(sink, dropped = gone.len(), "deliveries older than the history dropped");
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The oldest `limit` deliveries queued for `sink`, in order.
    pub fn queued(&self, sink: &str, limit: usize) -> Result<Vec<Transition>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(OUTBOX).map_err(|e| self.err(e))?;
        let history = txn.open_table(HISTORY).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.range((sink, 0)..=(sink, u64::MAX)).map_err(|e| self.err(e))?.take(limit) {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let seq = k.value().1;
            // Stores written before 0.1's key-only outbox kept the transition here.
            let parsed = if v.value().is_empty() {
                match history.get(seq).map_err(|e| self.err(e))? {
                    Some(h) => serde_json::from_slice::<Transition>(h.value()),
                    None => continue,
                }
            } else {
                serde_json::from_slice::<Transition>(v.value())
            };
            match parsed {
                Ok(t) => out.push(t),
                Err(e) => tracing::warn!(sink, seq, error = %e, "unreadable queued delivery skipped"),
            }
        }
        Ok(out)
    }

    /// How many deliveries wait for `sink`.
    pub fn queue_len(&self, sink: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(OUTBOX).map_err(|e| self.err(e))?;
        let n = table.range((sink, 0)..=(sink, u64::MAX)).map_err(|e| self.err(e))?.count();
        Ok(n as u64)
    }

    /// Remove deliveries the sink accepted (or refused for good). Not synced to disk
    /// on its own (flash): the next transition's commit makes it durable. A crash
    /// before that sends these deliveries again, which at-least-once allows.
    pub fn delivered(&self, sink: &str, seqs: &[u64]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(redb::Durability::None).map_err(|e| self.err(e))?;
        {
            let mut outbox = txn.open_table(OUTBOX).map_err(|e| self.err(e))?;
            for seq in seqs {
                outbox.remove((sink, *seq)).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firing(rule: &str, key: &str, since: u64) -> Firing {
        Firing { rule: rule.into(), key: key.into(), subject: format!("[ALERT] {key}"), message: "m".into(), since }
    }

    #[test]
    fn state_survives_reopening_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.redb");
        let store = AlertStore::open(&path).unwrap();
        let fired = vec![firing("threshold", "h/mem", 10), firing("threshold", "h/cpu", 11), firing("reboot", "h", 12)];
        store.commit(&Changes { fired, ..Changes::default() }).unwrap();
        let recovered = vec![("threshold".into(), "h/cpu".into(), "[RECOVERED] h/cpu".into(), "ok".into())];
        store.commit(&Changes { recovered, ..Changes::default() }).unwrap();
        drop(store);
        let store = AlertStore::open(&path).unwrap();
        let keys: Vec<(String, String)> = store.active().unwrap().into_iter().map(|f| (f.rule, f.key)).collect();
        assert_eq!(keys, vec![("threshold".into(), "h/mem".into()), ("reboot".into(), "h".into())]);
        let h = store.history(0, 100).unwrap();
        let kinds: Vec<&str> = h.iter().map(|t| t.alert_type.as_str()).collect();
        assert_eq!(kinds, vec!["alert", "alert", "alert", "recovery"]);
        assert_eq!(h.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(store.history(0, 1).unwrap()[0].seq, 3, "limit keeps the newest");
        store.commit(&Changes { forgotten_rules: vec!["threshold".into()], ..Changes::default() }).unwrap();
        assert_eq!(store.active().unwrap().len(), 1);
        // The history keeps the newest HISTORY_LIMIT transitions.
        let many: Vec<Firing> = (0..HISTORY_LIMIT + 5).map(|i| firing("r", &format!("k{i}"), i)).collect();
        store.commit(&Changes { fired: many, ..Changes::default() }).unwrap();
        let h = store.history(0, usize::MAX).unwrap();
        assert_eq!(h.len() as u64, HISTORY_LIMIT);
        // Churn: a full history replaced ten times over, one transition per commit,
        // must not grow the file without bound (16 MiB is the appliance's partition).
        let full = std::fs::metadata(&path).unwrap().len();
        for i in 0..2000u64 {
            let f = firing("churn", &format!("k{}", i % 50), i);
            let changes = if i % 2 == 0 {
                Changes { fired: vec![f], ..Changes::default() }
            } else {
                Changes { recovered: vec![(f.rule, f.key, f.subject, f.message)], ..Changes::default() }
            };
            store.commit(&changes).unwrap();
        }
        let churned = std::fs::metadata(&path).unwrap().len();
        eprintln!("alerts.redb: {full} bytes with a full history, {churned} after 2000 more commits");
        assert!(churned < 8 << 20, "{churned} bytes");
        assert_eq!(h.last().unwrap().key, format!("k{}", HISTORY_LIMIT + 4));
    }

    #[test]
    fn transitions_are_queued_per_sink_in_the_same_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.redb");
        let store = AlertStore::open_with_sinks(&path, vec!["webhook".into(), "slack".into()]).unwrap();
        store.commit(&Changes { fired: vec![firing("r", "a", 1), firing("r", "b", 2)], ..Changes::default() }).unwrap();
        let recovered = vec![("r".into(), "a".into(), "[RECOVERED] a".into(), "ok".into())];
        store.commit(&Changes { recovered, ..Changes::default() }).unwrap();
        let queued = |s: &AlertStore, sink: &str| {
            s.queued(sink, 100).unwrap().into_iter().map(|t| (t.key, t.alert_type)).collect::<Vec<_>>()
        };
        let all =
            vec![("a".to_string(), "alert".to_string()), ("b".into(), "alert".into()), ("a".into(), "recovery".into())];
        assert_eq!(queued(&store, "webhook"), all);
        // One sink's progress is its own.
        store.delivered("webhook", &[0, 1]).unwrap();
        assert_eq!(queued(&store, "webhook"), vec![("a".to_string(), "recovery".to_string())]);
        drop(store);
        let store = AlertStore::open_with_sinks(&path, vec!["webhook".into(), "slack".into()]).unwrap();
        assert_eq!(queued(&store, "slack"), all, "the queue survives a restart");
        assert_eq!(store.queue_len("webhook").unwrap(), 1);
        // Deliveries older than the kept history go with it (the outbox holds keys only).
        let many: Vec<Firing> = (0..HISTORY_LIMIT + 5).map(|i| firing("r", &format!("k{i}"), i)).collect();
        store.commit(&Changes { fired: many, ..Changes::default() }).unwrap();
        assert_eq!(store.queue_len("slack").unwrap(), HISTORY_LIMIT);
        assert_eq!(store.queued("slack", 1).unwrap()[0].key, "k5");
    }

    #[test]
    fn a_store_in_use_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.redb");
        let first = AlertStore::open(&path).unwrap();
        first.commit(&Changes { fired: vec![firing("r", "k", 1)], ..Changes::default() }).unwrap();
        let e = AlertStore::open(&path).err().expect("a second opener must fail").to_string();
        assert!(e.contains("another monserv"), "{e}");
        assert_eq!(first.active().unwrap().len(), 1, "the first store was not touched");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing set aside");
    }

    #[test]
    fn a_corrupt_file_is_set_aside_not_a_crash_loop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.redb");
        std::fs::write(&path, b"not a database, a half-written sector".repeat(200)).unwrap();
        let store = AlertStore::open(&path).unwrap();
        assert!(store.active().unwrap().is_empty());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("alerts.redb.bad-"))
            .collect();
        assert_eq!(aside.len(), 1, "the bad file is kept for inspection");
        store.commit(&Changes { fired: vec![firing("r", "k", 1)], ..Changes::default() }).unwrap();
        drop(store);
        assert_eq!(AlertStore::open(&path).unwrap().active().unwrap().len(), 1);
    }
}

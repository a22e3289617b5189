//! Silences: matchers on host, rule, key or subject with a start and an end. A
//! transition that a silence matches when it happens is recorded in the history
//! (marked `silenced`) and not queued for any sink; the check runs inside the
//! transition's commit, so a silence and a delivery never race.
//!
//! A matcher's value may use `*` for any run of characters (`plc-*`); without `*`
//! it must match exactly. All matchers of a silence must match. Deleting a silence
//! expires it (its end becomes now), as Alertmanager does; expired silences are
//! listed for a day, then dropped.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::alerts::{unix_now, AlertStore, StoreError};

/// Silence id -> JSON of [`Silence`].
pub(super) const SILENCES: TableDefinition<u64, &[u8]> = TableDefinition::new("silences");

/// Silences kept (active, pending and recently expired) at most.
pub const SILENCE_LIMIT: usize = 1000;
/// How long an expired silence is still listed.
const EXPIRED_KEPT_SECS: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Host,
    Rule,
    Key,
    Subject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub name: Field,
    pub value: String,
}

/// A silence as stored and as `GET /api/v1/silences` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: u64,
    pub matchers: Vec<Matcher>,
    /// Unix seconds.
    pub starts_at: u64,
    pub ends_at: u64,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub created_by: String,
}

/// The host part of an alert key (`host/disk:/`: `host`).
pub fn host_of(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

impl Silence {
    pub fn is_active(&self, now: u64) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    pub fn matches(&self, rule: &str, key: &str, subject: &str) -> bool {
        self.matchers.iter().all(|m| {
            let text = match m.name {
                Field::Host => host_of(key),
                Field::Rule => rule,
                Field::Key => key,
                Field::Subject => subject,
            };
            glob(&m.value, text)
        })
    }

    /// Check a silence a client sent: at least one matcher, sane values and times.
    pub fn validate(&self) -> Result<(), String> {
        if self.matchers.is_empty() || self.matchers.len() > 16 {
            return Err("a silence needs 1 to 16 matchers".into());
        }
        if let Some(m) = self.matchers.iter().find(|m| m.value.is_empty() || m.value.len() > 512) {
            return Err(format!("matcher {:?}: value must be 1 to 512 bytes", m.name));
        }
        if self.ends_at <= self.starts_at {
            return Err("ends_at must be after starts_at".into());
        }
        if self.comment.len() > 1024 || self.created_by.len() > 256 {
            return Err("comment (1024 bytes) or created_by (256 bytes) too long".into());
        }
        Ok(())
    }
}

/// The silences in `table` active at `now` (read once per commit).
pub(super) fn active_silences(table: &impl ReadableTable<u64, &'static [u8]>, now: u64) -> Vec<Silence> {
    let Ok(iter) = table.iter() else { return Vec::new() };
    iter.map_while(Result::ok)
        .filter_map(|(_, v)| serde_json::from_slice::<Silence>(v.value()).ok())
        .filter(|s| s.is_active(now))
        .collect()
}

impl AlertStore {
    /// Every silence not expired for more than a day, oldest first.
    pub fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(SILENCES).map_err(|e| self.err(e))?;
        let now = unix_now();
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (_, v) = entry.map_err(|e| self.err(e))?;
            if let Ok(s) = serde_json::from_slice::<Silence>(v.value()) {
                if s.ends_at + EXPIRED_KEPT_SECS > now {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// Store a new silence (its `id` is assigned); drops silences expired for over a
    /// day. Refused past [`SILENCE_LIMIT`].
    pub fn add_silence(&self, mut silence: Silence) -> Result<Result<Silence, String>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let result = {
            let mut table = txn.open_table(SILENCES).map_err(|e| self.err(e))?;
            let now = unix_now();
            let stale: Vec<u64> = table
                .iter()
                .map_err(|e| self.err(e))?
                .map_while(Result::ok)
                .filter(|(_, v)| {
                    serde_json::from_slice::<Silence>(v.value()).map_or(true, |s| s.ends_at + EXPIRED_KEPT_SECS <= now)
                })
                .map(|(k, _)| k.value())
                .collect();
            for id in stale {
                table.remove(id).map_err(|e| self.err(e))?;
            }
            if table.len().map_err(|e| self.err(e))? as usize >= SILENCE_LIMIT {
                Err(format!("{SILENCE_LIMIT} silences already; delete some first"))
            } else {
                silence.id = table.last().map_err(|e| self.err(e))?.map_or(1, |(k, _)| k.value() + 1);
                let bytes = serde_json::to_vec(&silence).map_err(|e| self.err(e))?;
                table.insert(silence.id, bytes.as_slice()).map_err(|e| self.err(e))?;
                Ok(silence)
            }
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(result)
    }

    /// Expire a silence now. `None` when there is no such silence.
    pub fn expire_silence(&self, id: u64) -> Result<Option<Silence>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let found = {
            let mut table = txn.open_table(SILENCES).map_err(|e| self.err(e))?;
            let current =
                table.get(id).map_err(|e| self.err(e))?.and_then(|v| serde_json::from_slice::<Silence>(v.value()).ok());
            match current {
                None => None,
                Some(mut s) => {
                    let now = unix_now();
                    s.ends_at = s.ends_at.min(now);
                    s.starts_at = s.starts_at.min(s.ends_at);
                    let bytes = serde_json::to_vec(&s).map_err(|e| self.err(e))?;
                    table.insert(id, bytes.as_slice()).map_err(|e| self.err(e))?;
                    Some(s)
                }
            }
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(found)
    }

    /// Firing alerts that no active silence matches (for reminders and refreshes).
    pub fn active_not_silenced(&self) -> Result<Vec<super::alerts::Firing>, StoreError> {
        let silences = {
            let txn = self.db.begin_read().map_err(|e| self.err(e))?;
            let table = txn.open_table(SILENCES).map_err(|e| self.err(e))?;
            active_silences(&table, unix_now())
        };
        let mut firing = self.active()?;
        firing.retain(|f| !silences.iter().any(|s| s.matches(&f.rule, &f.key, &f.subject)));
        Ok(firing)
    }

    /// Whether an active silence matches (for repeats, which are not transitions).
    pub fn is_silenced(&self, rule: &str, key: &str, subject: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(SILENCES).map_err(|e| self.err(e))?;
        Ok(active_silences(&table, unix_now()).iter().any(|s| s.matches(rule, key, subject)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("plc-*", "plc-7"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c"));
        assert!(!glob("plc", "plc-7"));
        assert!(glob("*disk*", "[ALERT] disk / full"));
        assert!(!glob("ab*ba", "aba"), "prefix and suffix must not overlap");
    }

    #[test]
    fn matching_and_validation() {
        let s = Silence {
            id: 0,
            matchers: vec![
                Matcher { name: Field::Host, value: "plc-*".into() },
                Matcher { name: Field::Rule, value: "threshold".into() },
            ],
            starts_at: 100,
            ends_at: 200,
            comment: String::new(),
            created_by: String::new(),
        };
        assert!(s.matches("threshold", "plc-7/disk:/", "x"));
        assert!(!s.matches("threshold", "scada/disk:/", "x"));
        assert!(!s.matches("reboot", "plc-7", "x"));
        assert!(s.is_active(100) && s.is_active(199) && !s.is_active(200) && !s.is_active(99));
        assert!(s.validate().is_ok());
        assert!(Silence { matchers: vec![], ..s.clone() }.validate().is_err());
        assert!(Silence { ends_at: 100, ..s }.validate().is_err());
    }
}

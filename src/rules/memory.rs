//! What a 0.3.0 rule can ask beyond its snapshot: the round's facts and history
//! (`RoundData`, shared by every rule of a round), and its own key-value state
//! (`RuleState`, one per rule, capped).
//!
//! State is transactional per evaluation: the sandbox works on a copy, and the
//! engine keeps it only if the evaluation succeeded. It is saved with the alert
//! state (`store::rule_state`), on change only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::facts::Answers;
use crate::history::History;

/// Keys bound the map's own overhead (about 50 bytes each) besides the bytes cap.
pub const MAX_KEYS: usize = 1024;
pub const MAX_KEY_BYTES: usize = 256;
/// Keys and values together.
pub const MAX_BYTES: usize = 64 * 1024;

/// Inputs of one round beyond the snapshot.
#[derive(Debug, Default)]
pub struct RoundData {
    pub history: Option<Arc<History>>,
    /// Declared facts answered this round, by target key.
    pub facts: HashMap<String, Arc<Answers>>,
    /// The round's time (milliseconds since the epoch): history windows end here.
    pub now_ms: u64,
}

impl RoundData {
    pub fn of(snapshot: &crate::model::Snapshot, history: Option<Arc<History>>) -> RoundData {
        RoundData {
            history,
            facts: snapshot
                .targets
                .iter()
                .filter(|t| !t.facts.is_empty())
                .map(|t| (t.url.clone(), t.facts.clone()))
                .collect(),
            now_ms: snapshot.unix_ms,
        }
    }
}

/// A rule's own memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleState {
    map: BTreeMap<String, String>,
    bytes: usize,
}

impl RuleState {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.map.get(key)
    }

    pub fn set(&mut self, key: String, value: String) -> Result<(), String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!("state key of {} bytes; at most {MAX_KEY_BYTES}", key.len()));
        }
        let old = self.map.get(&key).map_or(0, |v| key.len() + v.len());
        if old == 0 && self.map.len() >= MAX_KEYS {
            return Err(format!("state holds {MAX_KEYS} keys already; delete some first"));
        }
        let bytes = self.bytes - old + key.len() + value.len();
        if bytes > MAX_BYTES {
            return Err(format!("state would be {bytes} bytes; at most {MAX_BYTES}"));
        }
        self.bytes = bytes;
        self.map.insert(key, value);
        Ok(())
    }

    pub fn delete(&mut self, key: &str) {
        if let Some(v) = self.map.remove(key) {
            self.bytes -= key.len() + v.len();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.map
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.map).unwrap_or_default()
    }

    /// Read a saved state; what does not fit the caps (a file from elsewhere) is
    /// dropped key by key rather than refused whole.
    pub fn from_bytes(bytes: &[u8]) -> Result<RuleState, String> {
        let map: BTreeMap<String, String> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut s = RuleState::default();
        for (k, v) in map {
            let _ = s.set(k, v);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_a_refused_set_changes_nothing() {
        let mut s = RuleState::default();
        s.set("boot:web1".into(), "1700000000".into()).unwrap();
        assert_eq!(s.bytes(), 19);
        assert!(s.set("k".repeat(257), String::new()).is_err());
        assert!(s.set("big".into(), "x".repeat(MAX_BYTES)).unwrap_err().contains("at most 65536"));
        assert_eq!(s.bytes(), 19);
        for i in 0..MAX_KEYS - 1 {
            s.set(format!("k{i}"), String::new()).unwrap();
        }
        assert!(s.set("one-more".into(), String::new()).unwrap_err().contains("1024 keys"));
        // Replacing a key is not a new key.
        s.set("boot:web1".into(), "1700000001".into()).unwrap();
        s.delete("k0");
        s.set("one-more".into(), String::new()).unwrap();
        let back = RuleState::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        assert!(RuleState::from_bytes(b"not json").is_err());
    }
}

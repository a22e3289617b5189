//! The rules directory: drop in, replace or delete a `.wasm` file and it takes effect
//! without a restart.
//!
//! `<dir>/<name>.wasm` is rule `<name>`; an optional `<dir>/<name>.toml` holds its
//! settings (flat `key = value`; `for_seconds` is read by the host, the rest is passed
//! to the rule). inotify events (through `notify`) only wake the loader up: it waits
//! for 300 ms of quiet so a file being copied in is read whole, then reconciles the
//! directory with what is loaded. It also rescans every 30 s in case an event was
//! missed. A candidate that does not compile or fails its trial evaluation (a
//! half-written file, say) is rejected with a clear reason and the previous version
//! keeps running; the same bad bytes are not retried until they change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::engine::{digest, RuleEngine, RuleSettings, Source};

/// The built-in threshold rule, built from `rules-wasm/threshold` (CI checks that this
/// file matches its source).
pub const BUILTIN_THRESHOLD: &[u8] = include_bytes!("../../rules-wasm/dist/threshold.wasm");
pub const BUILTIN_NAME: &str = "threshold";
/// Largest rule file accepted.
pub const MAX_RULE_BYTES: usize = 16 << 20;
const QUIET: Duration = Duration::from_millis(300);
const RESCAN: Duration = Duration::from_secs(30);

/// A rule name: what a file may be called and what the REST API accepts.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The rules directory and how a rule's settings are found (shared by the loader
/// and the REST API).
#[derive(Debug, Clone)]
pub struct RulesDir {
    pub dir: PathBuf,
    pub builtin: bool,
    /// Config values the threshold rule gets from monserv.toml / the Go env names.
    pub threshold_base: HashMap<String, String>,
}

impl RulesDir {
    pub fn wasm_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.wasm"))
    }

    /// The settings of rule `name`: its `<name>.toml` over the base values.
    pub fn settings_for(&self, name: &str) -> Result<RuleSettings, String> {
        let base = if name == BUILTIN_NAME { self.threshold_base.clone() } else { HashMap::new() };
        let path = self.dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Loader::settings_from_toml(&text, &base).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(RuleSettings { values: base, hold_for: Duration::ZERO })
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

pub struct Loader {
    engine: Arc<RuleEngine>,
    rules: RulesDir,
    dir: PathBuf,
    /// Digests of candidates already rejected, so a bad file is reported once.
    rejected: HashMap<String, u64>,
    /// Wake-ups from the watcher (capacity 1: a pending one covers any later event).
    wake: Option<mpsc::Receiver<()>>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl Loader {
    pub fn new(engine: Arc<RuleEngine>, rules: RulesDir) -> Self {
        Loader { engine, dir: rules.dir.clone(), rules, rejected: HashMap::new(), wake: None, watcher: None }
    }

    /// Create the directory and start watching it. Call before the first `sync`, so
    /// that a file landing in between is not missed.
    pub fn watch(&mut self) {
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot create the rules directory; only the built-in rule runs");
        }
        let (tx, rx) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
            let _ = tx.try_send(());
        })
        .and_then(|mut w| {
            use notify::Watcher;
            w.watch(&self.dir, notify::RecursiveMode::NonRecursive).map(|_| w)
        });
        match watcher {
            Ok(w) => self.watcher = Some(w),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch the rules directory; rescanning every 30 s")
            }
        }
        self.wake = Some(rx);
    }

    /// Parse `<name>.toml`: `for_seconds` for the host, everything else as text.
    pub fn settings_from_toml(text: &str, base: &HashMap<String, String>) -> Result<RuleSettings, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.message().replace('\n', " "))?;
        let mut settings = RuleSettings { values: base.clone(), hold_for: Duration::ZERO };
        for (k, v) in table {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(format!(
                        "{k}: only strings, numbers and booleans are allowed, not {}",
                        other.type_str()
                    ))
                }
            };
            if k == "for_seconds" {
                let secs: f64 = text.parse().map_err(|_| format!("for_seconds = {text:?} is not a number"))?;
                if !(secs.is_finite() && (0.0..=86_400.0).contains(&secs)) {
                    return Err(format!("for_seconds = {secs}: must be between 0 and 86400"));
                }
                settings.hold_for = Duration::from_secs_f64(secs);
            } else {
                settings.values.insert(k, text);
            }
        }
        Ok(settings)
    }

    /// What the directory (and the built-in) say should be loaded.
    fn desired(&self) -> HashMap<String, Result<(Vec<u8>, Source), String>> {
        let mut want = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let (Some(stem), Some("wasm")) =
                    (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|e| e.to_str()))
                else {
                    continue;
                };
                if !valid_name(stem) {
                    tracing::warn!(file = %path.display(), "ignoring rule file: names are lowercase letters, digits, - and _ (at most 64)");
                    continue;
                }
                want.insert(stem.to_string(), read_rule(&path).map(|b| (b, Source::File)));
            }
        }
        if self.rules.builtin && !want.contains_key(BUILTIN_NAME) {
            want.insert(BUILTIN_NAME.to_string(), Ok((BUILTIN_THRESHOLD.to_vec(), Source::Builtin)));
        }
        want
    }

    /// Bring the loaded rules in line with the directory.
    pub async fn sync(&mut self) {
        let want = self.desired();
        for (name, candidate) in &want {
            let outcome = match candidate {
                Err(e) => Err(e.clone()),
                Ok((bytes, source)) => match self.rules.settings_for(name) {
                    Err(e) => Err(e),
                    Ok(settings) => {
                        let d = digest(bytes, &settings);
                        if self.engine.digest_of(name) == Some(d) || self.rejected.get(name) == Some(&d) {
                            continue;
                        }
                        self.engine.install(name, bytes.clone(), settings, source.clone()).await.inspect_err(|_| {
                            self.rejected.insert(name.clone(), d);
                        })
                    }
                },
            };
            match outcome {
                Ok(_) => {
                    self.rejected.remove(name);
                    self.engine.set_rejected(name, None);
                }
                Err(e) => {
                    tracing::warn!(rule = %name, reason = %e, "rule rejected; the previous version (if any) keeps running");
                    self.engine.set_rejected(name, Some(e));
                }
            }
        }
        for status in self.engine.status() {
            if !want.contains_key(&status.name) {
                self.engine.remove(&status.name);
            }
        }
        for name in self.engine.rejected().into_keys() {
            if !want.contains_key(&name) {
                self.engine.set_rejected(&name, None);
            }
        }
    }

    /// Reload on changes until `shutdown` (`watch` first).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let Some(mut rx) = self.wake.take() else {
            tracing::error!("rules loader started without watch(); not watching");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                woke = rx.recv() => if woke.is_none() { return },
                _ = tokio::time::sleep(RESCAN) => {}
            }
            // Wait for quiet: writers copying a file in make several events.
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    more = tokio::time::timeout(QUIET, rx.recv()) => if more.is_err() { break },
                }
            }
            self.sync().await;
        }
    }
}

fn read_rule(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_RULE_BYTES as u64 {
        return Err(format!("{}: {} bytes; rules are limited to {MAX_RULE_BYTES}", path.display(), meta.len()));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_files() {
        let base: HashMap<String, String> = [("memory_percent".to_string(), "90".to_string())].into();
        let s =
            Loader::settings_from_toml("memory_percent = 75\nfor_seconds = 30\nlabel = \"x\"\nstrict = true\n", &base)
                .unwrap();
        assert_eq!(s.values["memory_percent"], "75");
        assert_eq!(s.values["label"], "x");
        assert_eq!(s.values["strict"], "true");
        assert_eq!(s.hold_for, Duration::from_secs(30));
        assert!(!s.values.contains_key("for_seconds"));
        assert!(Loader::settings_from_toml("for_seconds = -1", &base).unwrap_err().contains("for_seconds"));
        assert!(Loader::settings_from_toml("a = [1]", &base).unwrap_err().contains("only strings"));
        assert!(Loader::settings_from_toml("= broken", &base).is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name("disk-fill_2"));
        for bad in ["", "Caps", "a.b", "../x", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}

//! The rules directory: drop in, replace or delete a `.wasm` file and it takes effect
//! without a restart.
//!
//! `<dir>/<name>.wasm` is rule `<name>`; an optional `<dir>/<name>.toml` holds its
//! settings (flat `key = value`; `for_seconds` is read by the host, the rest is passed
//! to the rule). inotify events (through `notify`) for changes only (writes closed,
//! creations, deletions, renames; never the loader's own reads) wake the loader up:
//! it waits for 300 ms of quiet so a file being copied in is read whole, then
//! reconciles the directory with what is loaded. It also rescans every 30 s in case
//! an event was missed, and every 5 s if inotify cannot be had at all (the reason is
//! in `GET /api/v1/rules`).
//!
//! Everything in the directory is untrusted: only regular files are read (a FIFO or
//! a link to a device is refused, never waited on), at most the size limit, and all
//! of it on a blocking thread, never on the async workers. A candidate that cannot be
//! read, does not compile or fails its trial evaluation is rejected with a clear
//! reason (logged once per change of the file) and the previous version keeps
//! running; the same bad bytes are not retried until they change.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::engine::{digest, RuleEngine, RuleSettings, Source};
use crate::store::{read_regular, ReadError};

/// The built-in threshold rule, built from `rules-wasm/threshold` (CI checks that
/// `rules-wasm/dist/threshold.wasm` matches its source).
pub fn builtin_threshold() -> &'static [u8] {
    crate::embedded::threshold_wasm()
}
pub const BUILTIN_NAME: &str = "threshold";
/// Largest rule file accepted (today's rules are 16-80 KB).
pub const MAX_RULE_BYTES: usize = super::validate::MAX.file_bytes;
/// Largest settings file accepted.
pub const MAX_SETTINGS_BYTES: usize = 64 << 10;
const QUIET: Duration = Duration::from_millis(300);
const RESCAN: Duration = Duration::from_secs(30);
/// Rescan period when the directory cannot be watched.
const POLL_WITHOUT_WATCHER: Duration = Duration::from_secs(5);

/// A rule name: what a file may be called and what the REST API accepts.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A `for` duration: seconds as a number, or `90s`, `2m`, `1h30m`, `1.5h`; at most a day.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let secs = match text.parse::<f64>() {
        Ok(n) => n,
        Err(_) => {
            let (mut total, mut number) = (0.0, String::new());
            for c in text.chars() {
                match c {
                    '0'..='9' | '.' => number.push(c),
                    's' | 'm' | 'h' | 'd' if !number.is_empty() => {
                        let n: f64 = number.parse().map_err(|_| format!("{number:?} is not a number"))?;
                        total += n * match c {
                            's' => 1.0,
                            'm' => 60.0,
                            'h' => 3600.0,
                            _ => 86_400.0,
                        };
                        number.clear();
                    }
                    _ => return Err("write seconds, or a duration like 90s, 2m, 1h30m".into()),
                }
            }
            if !number.is_empty() {
                return Err("a unit is missing after the last number (s, m, h or d)".into());
            }
            total
        }
    };
    if !(secs.is_finite() && (0.0..=86_400.0).contains(&secs)) {
        return Err("must be between 0 and 1 day".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Why a rule's settings could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
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

    pub fn settings_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    /// The settings of rule `name`: its `<name>.toml` over the base values. Blocking
    /// I/O: call off the async workers.
    pub fn settings_for(&self, name: &str) -> Result<RuleSettings, SettingsError> {
        let base = if name == BUILTIN_NAME { self.threshold_base.clone() } else { HashMap::new() };
        read_settings(&self.settings_path(name), base)
    }

    /// Read a rule file the way the loader does. Blocking I/O.
    pub fn read_rule(&self, path: &Path) -> Result<Vec<u8>, String> {
        read_regular(path, MAX_RULE_BYTES).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// What rule `name` runs with `settings`: its `.wasm` if there is one, else the
    /// built-in threshold rule, else (with a `when`) the expression component;
    /// `None` for settings waiting for their `.wasm`. Blocking I/O.
    pub fn code_for(&self, name: &str, settings: &RuleSettings) -> Result<Option<Code>, String> {
        let wasm = self.wasm_path(name);
        match read_regular(&wasm, MAX_RULE_BYTES) {
            Ok(bytes) => return Ok(Some((Cow::Owned(bytes), Source::File))),
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", wasm.display())),
        }
        if name == BUILTIN_NAME && self.builtin {
            return Ok(Some((Cow::Borrowed(builtin_threshold()), Source::Builtin)));
        }
        if super::expression::has_condition(&settings.values) {
            return Ok(Some((Cow::Borrowed(super::expression::component()), Source::Expression)));
        }
        Ok(None)
    }

    /// Whether `name` is an expression rule by its files: no `.wasm`, and a settings
    /// file with a condition (even one that does not parse). Blocking I/O.
    pub fn is_expression(&self, name: &str) -> bool {
        !(self.wasm_path(name).exists() || name == BUILTIN_NAME && self.builtin)
            && read_regular(&self.settings_path(name), MAX_SETTINGS_BYTES)
                .is_ok_and(|text| super::expression::mentions_condition(&String::from_utf8_lossy(&text)))
    }

    /// What the directory (and the built-in) say should be loaded, by rule name, and
    /// files refused by name alone. One listing of the directory. Blocking I/O: call
    /// off the async workers.
    fn scan(&self) -> Scan {
        let mut names = std::collections::BTreeSet::new();
        let mut refused = Vec::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let (Some(stem), Some(ext @ ("wasm" | "toml"))) =
                (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|e| e.to_str()))
            else {
                continue;
            };
            if valid_name(stem) {
                names.insert(stem.to_string());
            } else if ext == "wasm" {
                let file = entry.file_name().to_string_lossy().into_owned();
                refused.push((file, "ignored: rule names are lowercase letters, digits, - and _ (at most 64)".into()));
            }
        }
        if self.builtin {
            names.insert(BUILTIN_NAME.to_string());
        }
        let mut want = HashMap::new();
        for name in names {
            let candidate = match self.settings_for(&name) {
                Ok(settings) => match self.code_for(&name, &settings) {
                    Ok(Some((bytes, source))) => Ok(Candidate { bytes, source, settings }),
                    Ok(None) => continue,
                    Err(e) => Err(e),
                },
                // Broken settings are the rule's problem if there is a rule: a
                // `.wasm`, the built-in, or a file meant as a condition.
                Err(e) if self.wasm_path(&name).exists() || name == BUILTIN_NAME || self.is_expression(&name) => {
                    Err(e.to_string())
                }
                Err(_) => continue,
            };
            want.insert(name, candidate);
        }
        (want, refused)
    }
}

/// Read a settings file over `base` (just `base` if there is none). Blocking I/O.
pub fn read_settings(path: &Path, base: HashMap<String, String>) -> Result<RuleSettings, SettingsError> {
    let shown = || path.display().to_string();
    match read_regular(path, MAX_SETTINGS_BYTES) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| SettingsError::Invalid { path: shown(), reason: "not UTF-8".into() })?;
            let mut settings = Loader::settings_from_toml(&text, &base)
                .map_err(|reason| SettingsError::Invalid { path: shown(), reason })?;
            settings.file = Some((shown(), text.into()));
            Ok(settings)
        }
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(RuleSettings { values: base, ..RuleSettings::default() })
        }
        Err(e) => Err(SettingsError::Read { path: shown(), reason: e.to_string() }),
    }
}

/// A rule's code and where it comes from; built-in code is borrowed, not copied at
/// every scan.
pub type Code = (Cow<'static, [u8]>, Source);

/// A scan: candidates by rule name, and files refused by name alone (with why).
type Scan = (HashMap<String, Result<Candidate, String>>, Vec<(String, String)>);

struct Candidate {
    bytes: Cow<'static, [u8]>,
    source: Source,
    settings: RuleSettings,
}

pub struct Loader {
    engine: Arc<RuleEngine>,
    rules: RulesDir,
    /// Digests of candidates already rejected, so a bad file is reported once.
    rejected: HashMap<String, u64>,
    /// The reason last logged per rule or file: a rejection is logged once per change.
    logged: HashMap<String, String>,
    /// Wake-ups from the watcher (capacity 1: a pending one covers any later event).
    wake: Option<mpsc::Receiver<()>>,
    watcher: Option<notify::RecommendedWatcher>,
}

/// inotify events that can change what should be loaded. Opens, reads and
/// read-only closes (the loader's own rescans among them) are not.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

impl Loader {
    pub fn new(engine: Arc<RuleEngine>, rules: RulesDir) -> Self {
        Loader { engine, rules, rejected: HashMap::new(), logged: HashMap::new(), wake: None, watcher: None }
    }

    /// Create the directory and start watching it. Call before the first `sync`, so
    /// that a file landing in between is not missed. Without a watcher the loader
    /// polls the directory instead, and says so.
    pub fn watch(&mut self) {
        let dir = self.rules.dir.clone();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the rules directory; only the built-in rule runs");
        }
        let (tx, rx) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.as_ref().map_or(true, |e| is_change(&e.kind)) {
                let _ = tx.try_send(());
            }
        })
        .and_then(|mut w| {
            use notify::Watcher;
            w.watch(&dir, notify::RecursiveMode::NonRecursive).map(|_| w)
        });
        match watcher {
            Ok(w) => {
                self.watcher = Some(w);
                self.wake = Some(rx);
                self.engine.set_watch_mode("inotify".into());
            }
            Err(e) => {
                let mode = format!("polling every {POLL_WITHOUT_WATCHER:?} (cannot watch: {e})");
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the rules directory; rescanning every {POLL_WITHOUT_WATCHER:?}");
                self.engine.set_watch_mode(mode);
            }
        }
    }

    /// Parse `<name>.toml`: `for_seconds` for the host, everything else as text.
    pub fn settings_from_toml(text: &str, base: &HashMap<String, String>) -> Result<RuleSettings, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: ")
            });
            format!("{}{}", at.unwrap_or_default(), e.message().replace('\n', " "))
        })?;
        let mut settings = RuleSettings { values: base.clone(), ..RuleSettings::default() };
        for (k, v) in table {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => {
                    let text = super::settings::to_list_text(&items).map_err(|why| format!("{k}: {why}"))?;
                    settings.lists.insert(k.clone());
                    text
                }
                other => {
                    return Err(format!(
                        "{k}: only strings, numbers, booleans and lists are allowed, not {}",
                        other.type_str()
                    ))
                }
            };
            if k == "for_seconds" || k == "for" {
                settings.hold_for = parse_duration(&text).map_err(|why| format!("{k} = {text:?}: {why}"))?;
            } else {
                settings.values.insert(k, text);
            }
        }
        Ok(settings)
    }

    /// Log a rejection once per change of its reason.
    fn report(&mut self, name: &str, reason: Option<&str>) {
        match reason {
            Some(r) => {
                if self.logged.get(name).map(String::as_str) != Some(r) {
                    tracing::warn!(rule = %name, reason = %r, "rule rejected; the previous version (if any) keeps running");
                    self.logged.insert(name.to_string(), r.to_string());
                }
            }
            None => {
                self.logged.remove(name);
            }
        }
    }

    /// Bring the loaded rules in line with the directory.
    pub async fn sync(&mut self) {
        self.engine.note_directory_scan();
        let rules = self.rules.clone();
        let (want, refused) = match tokio::task::spawn_blocking(move || rules.scan()).await {
            Ok(scanned) => scanned,
            Err(e) => {
                tracing::error!(error = %e, "rules directory scan failed");
                return;
            }
        };
        for (name, candidate) in &want {
            let outcome = match candidate {
                Err(e) => Err(e.clone()),
                Ok(c) => {
                    let d = digest(&c.bytes, &c.settings);
                    if self.engine.digest_of(name) == Some(d) || self.rejected.get(name) == Some(&d) {
                        continue;
                    }
                    let installed =
                        self.engine.install(name, c.bytes.to_vec(), c.settings.clone(), c.source.clone()).await;
                    installed.map_err(|e| {
                        self.rejected.insert(name.clone(), d);
                        e.to_string()
                    })
                }
            };
            match outcome {
                Ok(_) => {
                    self.rejected.remove(name);
                    self.report(name, None);
                    self.engine.set_rejected(name, None);
                }
                Err(e) => {
                    self.report(name, Some(&e));
                    self.engine.set_rejected(name, Some(e));
                }
            }
        }
        for (file, reason) in &refused {
            self.report(file, Some(reason));
            self.engine.set_rejected(file, Some(reason.clone()));
        }
        for status in self.engine.status() {
            if !want.contains_key(&status.name) {
                self.engine.remove(&status.name).await;
            }
        }
        for name in self.engine.rejected().into_keys() {
            if !want.contains_key(&name) && !refused.iter().any(|(f, _)| *f == name) {
                self.engine.set_rejected(&name, None);
                self.logged.remove(&name);
            }
        }
    }

    /// Reload on changes until `shutdown` (`watch` first).
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let period = if self.wake.is_some() { RESCAN } else { POLL_WITHOUT_WATCHER };
            let woke = async {
                match self.wake.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                woke = woke => if woke.is_none() {
                    // The watcher is gone: keep hot swap working by polling.
                    tracing::warn!("rules directory watcher stopped; rescanning every {POLL_WITHOUT_WATCHER:?}");
                    self.wake = None;
                    self.watcher = None;
                    self.engine.set_watch_mode(format!("polling every {POLL_WITHOUT_WATCHER:?} (watcher stopped)"));
                },
                _ = tokio::time::sleep(period) => {}
            }
            // Wait for quiet: writers copying a file in make several events.
            if let Some(rx) = self.wake.as_mut() {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        more = tokio::time::timeout(QUIET, rx.recv()) => if !matches!(more, Ok(Some(()))) { break },
                    }
                }
            }
            self.sync().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
        // Arrays are lists (items one per line); tables are not settings.
        let s = Loader::settings_from_toml("a = [1, \"two\"]", &base).unwrap();
        assert_eq!((s.values["a"].as_str(), s.lists.contains("a")), ("1\ntwo", true));
        let e = Loader::settings_from_toml("a = { b = 1 }", &base).unwrap_err();
        assert_eq!(e, "a: only strings, numbers, booleans and lists are allowed, not table");
        let e = Loader::settings_from_toml("a = [[1]]", &base).unwrap_err();
        assert_eq!(e, "a: items must be strings or numbers, not array");
        let e = Loader::settings_from_toml("a = 1\nb = = 2\n", &base).unwrap_err();
        assert!(e.starts_with("line 2, column 5: "), "{e}");
    }

    fn engine() -> Arc<RuleEngine> {
        Arc::new(RuleEngine::new(super::super::sandbox::Sandbox::new(Default::default()).unwrap()))
    }

    fn rules_dir(dir: &Path) -> RulesDir {
        RulesDir { dir: dir.to_path_buf(), builtin: false, threshold_base: HashMap::new() }
    }

    fn reboot() -> Vec<u8> {
        std::fs::read(format!("{}/rules-wasm/dist/examples/reboot.wasm", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watcher_wakes_for_changes_not_for_its_own_reads() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let mut loader = Loader::new(engine.clone(), rules_dir(dir.path()));
        loader.watch();
        assert_eq!(engine.engine_status().watch, "inotify");
        std::fs::write(dir.path().join("reboot.wasm"), reboot()).unwrap();
        let rx = loader.wake.as_mut().unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.is_ok(), "no wake for a new file");
        loader.sync().await;
        assert_eq!(engine.status()[0].name, "reboot");
        let rx = loader.wake.as_mut().unwrap();
        tokio::time::sleep(QUIET).await;
        while rx.try_recv().is_ok() {}
        // Rescans open and read every file; none of that is a change.
        for _ in 0..3 {
            loader.sync().await;
        }
        tokio::time::sleep(QUIET).await;
        assert!(loader.wake.as_mut().unwrap().try_recv().is_err(), "the loader woke itself up");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_watcher_the_directory_is_polled() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let mut loader = Loader::new(engine.clone(), rules_dir(dir.path()));
        // A watcher that died (its sender gone), as when inotify stops working.
        let (tx, rx) = mpsc::channel(1);
        drop(tx);
        loader.wake = Some(rx);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(loader.run(shutdown.clone()));
        std::fs::write(dir.path().join("reboot.wasm"), reboot()).unwrap();
        let start = std::time::Instant::now();
        while engine.status().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(15), "hot swap stopped with the watcher");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(engine.engine_status().watch.starts_with("polling every 5s"), "{}", engine.engine_status().watch);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn names() {
        assert!(valid_name("disk-fill_2"));
        for bad in ["", "Caps", "a.b", "../x", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}

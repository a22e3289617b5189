//! Compiling a rule in a short-lived child process of the same binary.
//!
//! Cranelift is the heaviest thing monserv does, and only for a few milliseconds
//! when a rule is loaded; done in the daemon, its heap (glibc keeps it) and its code
//! pages stay resident for good: the built-in rule alone doubled idle RSS. So the
//! daemon runs `/proc/self/exe __compile-rule`, which reads the candidate on stdin,
//! compiles it with the same engine settings and writes wasmtime's serialized
//! artifact on stdout, then exits, taking all compile memory with it. A candidate
//! built to make the compiler eat memory costs the child, not the daemon.
//!
//! The daemon loads the artifact with `Component::deserialize`, the one `unsafe`
//! call in monserv: wasmtime requires the bytes to be its own `precompile_component`
//! output, which they are: produced moments earlier by this same binary image
//! (`/proc/self/exe`, even if the file was since replaced), received over a private
//! pipe, never stored. wasmtime still checks version and settings and refuses a
//! mismatch. If the child cannot run at all (no `/proc`, exec refused), the daemon
//! compiles in-process, as `monserv rule check` and the tests do.
//!
//! The child runs at a lower priority (nice +10): a compile is background work (the
//! previous version of the rule keeps running meanwhile), and on a one-core device,
//! or one emulated at boot, it must not delay the rounds and the first metrics.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::Engine;

pub use crate::config::CompileIn;

/// The hidden first argument that makes `monserv` a compiler child.
pub const CHILD_ARG: &str = "__compile-rule";
/// A child that takes longer is killed (validated candidates compile in well under
/// a second; `validate` bounds what they may cost).
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of compiled artifact accepted from the child.
const MAX_ARTIFACT_BYTES: u64 = 64 << 20;
/// Exit status of a child that refused the candidate (reason on stderr).
const EXIT_REFUSED: i32 = 2;
/// Added to the child's niceness: about a tenth of a core when the daemon is busy, all of
/// an idle one.
const CHILD_NICE: libc::c_int = 10;

/// Why the child gave no artifact.
#[derive(Debug)]
pub enum ChildError {
    /// The candidate is at fault (invalid, or the compiler died on it).
    Refused(String),
    /// The child could not do its job at all; compiling in-process is the fallback.
    Unavailable(String),
}

/// The child's whole life: candidate on stdin, artifact on stdout.
pub fn child_main() -> ExitCode {
    lower_priority();
    let mut bytes = Vec::new();
    let limit = super::validate::MAX.file_bytes as u64;
    if let Err(e) = std::io::stdin().take(limit + 1).read_to_end(&mut bytes) {
        eprintln!("reading the candidate: {e}");
        return ExitCode::FAILURE;
    }
    if bytes.len() as u64 > limit {
        eprintln!("larger than {limit} bytes");
        return ExitCode::from(EXIT_REFUSED as u8);
    }
    let engine = match Engine::new(&super::sandbox::engine_config()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot start the wasm engine: {e}");
            return ExitCode::FAILURE;
        }
    };
    match engine.precompile_component(&bytes) {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("writing the artifact: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(EXIT_REFUSED as u8)
        }
    }
}

#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: a plain system call on this process; no memory is involved. Failing
    // is harmless: the compile then runs at the daemon's priority.
    let _ = unsafe { libc::nice(CHILD_NICE) };
}

/// Compile `bytes` in a child running `exe`. Blocking: call off the async workers.
pub fn compile_in_child(exe: &Path, bytes: &[u8]) -> Result<Vec<u8>, ChildError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| ChildError::Unavailable(format!("{what}: {e}"));
    let mut child = Command::new(exe)
        .arg(CHILD_ARG)
        // Nothing of the daemon's environment (credentials among it) goes along.
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| unavailable("cannot start the compiler process", &e))?;
    let pid = child.id();
    // The child reads all of stdin before it writes anything, so writing first and
    // then reading cannot deadlock. A watchdog kills a child that overstays.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::Builder::new().name("rule-compile-watchdog".into()).spawn(move || {
        if finished.recv_timeout(CHILD_TIMEOUT).is_err() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(bytes));
    let mut artifact = Vec::new();
    let mut stderr = Vec::new();
    if let Some(out) = child.stdout.take() {
        let _ = out.take(MAX_ARTIFACT_BYTES).read_to_end(&mut artifact);
    }
    if let Some(err) = child.stderr.take() {
        let _ = err.take(64 << 10).read_to_end(&mut stderr);
    }
    let status = child.wait();
    let _ = done.send(());
    if let Ok(w) = watchdog {
        let _ = w.join();
    }
    let status = status.map_err(|e| unavailable("waiting for the compiler process", &e))?;
    let reason = String::from_utf8_lossy(&stderr).trim().to_string();
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) if written.is_some_and(|w| w.is_ok()) => Ok(artifact),
        (Some(EXIT_REFUSED), _) => Err(ChildError::Refused(reason)),
        (None, Some(signal)) => Err(ChildError::Refused(format!(
            "the compiler process was killed by signal {signal} (out of memory, or over {CHILD_TIMEOUT:?})"
        ))),
        (code, _) => Err(ChildError::Unavailable(format!("compiler process exited with {code:?}: {reason}"))),
    }
}

/// Load an artifact that [`compile_in_child`] produced.
#[allow(unsafe_code)]
pub fn load_artifact(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `artifact` is the output of `Engine::precompile_component`, run by this
    // same binary image (/proc/self/exe) with the same engine settings
    // (`sandbox::engine_config`), received over a pipe only the two processes hold
    // and never stored; it is not rule-supplied machine code. wasmtime additionally
    // checks its version and compilation settings and returns an error on mismatch.
    unsafe { Component::deserialize(engine, artifact) }
}

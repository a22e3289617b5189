//! The appliance's first-boot API token (`generate_auth_token = true`).
//!
//! An appliance must not come up with an open REST API and `/ws`, yet its image has
//! no token to ship (every unit would share it). With no token configured, the first
//! start creates `<state_dir>/auth_token`: 192 random bits in hex, mode 0600, written
//! atomically. Later starts read the same file, so the token stays until an operator
//! replaces or deletes it. The token itself is never logged; the path is.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::Secret;
use crate::store::{read_regular, write_atomic};

pub const FILE_NAME: &str = "auth_token";

/// The token in `<state_dir>/auth_token`, created when missing. Blocking I/O.
pub fn load_or_create(state_dir: &Path) -> Result<(Secret, PathBuf, bool), String> {
    let path = state_dir.join(FILE_NAME);
    match read_regular(&path, 4096) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if text.len() < 16 || text.bytes().any(|b| !b.is_ascii_graphic()) {
                return Err(format!(
                    "{}: not a usable token (16 or more printable characters); delete it to get a new one",
                    path.display()
                ));
            }
            if std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                tracing::warn!(path = %path.display(), "the auth token file is readable by other users");
            }
            Ok((Secret::new(text), path, false))
        }
        Err(crate::store::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 24] = rand::random();
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_atomic(&path, format!("{token}\n").as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok((Secret::new(token), path, true))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, path, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        assert_eq!(first.expose().len(), 48);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, _, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(again.expose(), first.expose());
        std::fs::write(&path, "short\n").unwrap();
        assert!(load_or_create(dir.path()).unwrap_err().contains("not a usable token"));
    }
}

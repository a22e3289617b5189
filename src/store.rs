//! What must survive a restart, written the flash-friendly way.
//!
//! Everything monserv writes lives under its state directory and is replaced
//! atomically: write a temporary file beside it, fsync, rename over the old one,
//! fsync the directory. A power cut leaves either the old or the new file, never a
//! torn one. Writes are rare (a new host key, later alert state), never per poll.
//! Reading untrusted files (the rules directory) goes through [`read_regular`].

pub mod alerts;
pub mod backlog;
pub mod silence;
pub mod token;

use std::fs;
use std::io::Write;
use std::path::Path;

/// Atomically replace `path` with `contents` (mode 0600: these files may hold keys).
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp{}", file_name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Why [`read_regular`] refused a file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file (a {0}); only regular files are read")]
    NotRegular(&'static str),
    #[error("larger than {limit} bytes")]
    TooLarge { limit: usize },
}

/// Read an untrusted file: regular files only, at most `limit` bytes, without ever
/// blocking on a FIFO or reading a device forever. The file is opened with
/// `O_NONBLOCK` (opening a FIFO then returns at once) and judged by what was opened
/// (`fstat`), not by a path that may be swapped in between. Blocking I/O: call off
/// the async workers.
pub fn read_regular(path: &Path, limit: usize) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular(if kind.is_fifo() {
            "FIFO"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_socket() {
            "socket"
        } else if kind.is_dir() {
            "directory"
        } else {
            "special file"
        }));
    }
    let mut buf = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_file_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("monserv-store-{}", std::process::id()));
        let path = dir.join("sub/known_hosts");
        write_atomic(&path, b"one\n").unwrap();
        write_atomic(&path, b"two\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two\n");
        let names: Vec<_> = fs::read_dir(dir.join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_regular_refuses_fifos_and_devices_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.wasm");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer: a blocking open would hang here forever.
        assert_eq!(
            read_regular(&fifo, 10).unwrap_err().to_string(),
            "not a regular file (a FIFO); only regular files are read"
        );
        let zero = dir.path().join("zero.wasm");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(read_regular(&zero, 10), Err(ReadError::NotRegular("character device"))));
        let file = dir.path().join("r.toml");
        fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular(&file, 10).unwrap(), b"0123456789");
        assert!(matches!(read_regular(&file, 9), Err(ReadError::TooLarge { limit: 9 })));
        assert!(matches!(read_regular(dir.path(), 9), Err(ReadError::NotRegular("directory"))));
    }
}

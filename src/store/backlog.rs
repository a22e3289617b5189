//! remote_write's backlog on flash: rounds the receiver has not taken yet, oldest
//! first, in one redb file per receiver (crash-safe commits). Written only while a
//! receiver is away, in batches (one transaction per flush); capped in bytes, the
//! oldest rounds dropped first and counted.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::alerts::StoreError;

/// seq -> [samples: u32 LE][encoded WriteRequest series of one round]
const ROUNDS: TableDefinition<u64, &[u8]> = TableDefinition::new("rounds");

/// One round's series, encoded, and how many samples they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub samples: u32,
    pub encoded: Vec<u8>,
}

pub struct Backlog {
    db: Database,
    path: PathBuf,
    /// Bytes of the stored rounds (values), kept in step with the table.
    bytes: u64,
    rounds: u64,
    next_seq: u64,
}

impl Backlog {
    /// Open (or create) the backlog at `path`. A file that cannot be read is set
    /// aside, like the alert store, rather than stopping the export.
    pub fn open(path: &Path) -> Result<Backlog, StoreError> {
        let err =
            |e: &dyn std::fmt::Display| StoreError::Io { path: path.display().to_string(), reason: e.to_string() };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let db = match Database::create(path).map_err(|e| e.to_string()).and_then(|db| Self::scan(&db).map(|s| (db, s)))
        {
            Ok(opened) => opened,
            Err(reason) => {
                let aside = path.with_extension("redb.bad");
                tracing::error!(path = %path.display(), %reason, "remote_write backlog unusable; set aside");
                std::fs::rename(path, &aside).map_err(|e| err(&e))?;
                let db = Database::create(path).map_err(|e| err(&e))?;
                let scanned = Self::scan(&db).map_err(|e| err(&e))?;
                (db, scanned)
            }
        };
        let (db, (bytes, rounds, next_seq)) = db;
        Ok(Backlog { db, path: path.to_path_buf(), bytes, rounds, next_seq })
    }

    /// (bytes, rounds, next sequence number) of what is stored.
    fn scan(db: &Database) -> Result<(u64, u64, u64), String> {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(ROUNDS).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(ROUNDS).map_err(|e| e.to_string())?;
        let (mut bytes, mut rounds, mut last) = (0, 0, None);
        for entry in table.iter().map_err(|e| e.to_string())? {
            let (k, v) = entry.map_err(|e| e.to_string())?;
            bytes += v.value().len() as u64;
            rounds += 1;
            last = Some(k.value());
        }
        Ok((bytes, rounds, last.map_or(0, |l| l + 1)))
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io { path: self.path.display().to_string(), reason: e.to_string() }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.rounds == 0
    }

    /// Append rounds at the tail in one transaction, then drop the oldest while over
    /// `max_bytes`. Returns the samples dropped.
    pub fn append(&mut self, rounds: &[Round], max_bytes: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut dropped = 0;
        let (mut bytes, mut count, mut seq) = (self.bytes, self.rounds, self.next_seq);
        {
            let mut table = txn.open_table(ROUNDS).map_err(|e| self.err(e))?;
            for r in rounds {
                let mut value = Vec::with_capacity(4 + r.encoded.len());
                value.extend_from_slice(&r.samples.to_le_bytes());
                value.extend_from_slice(&r.encoded);
                table.insert(seq, value.as_slice()).map_err(|e| self.err(e))?;
                bytes += value.len() as u64;
                count += 1;
                seq += 1;
            }
            while bytes > max_bytes {
                let Some((_, v)) = table.pop_first().map_err(|e| self.err(e))? else { break };
                let v = v.value();
                bytes -= v.len() as u64;
                count -= 1;
                dropped += u64::from(samples_of(v));
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        (self.bytes, self.rounds, self.next_seq) = (bytes, count, seq);
        Ok(dropped)
    }

    /// The oldest rounds, up to `max_samples` in all (at least one round).
    pub fn oldest(&self, max_samples: usize) -> Result<Vec<(u64, Round)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(ROUNDS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let mut samples = 0usize;
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let v = v.value();
            let n = samples_of(v) as usize;
            if !out.is_empty() && samples + n > max_samples {
                break;
            }
            samples += n;
            out.push((k.value(), Round { samples: n as u32, encoded: v.get(4..).unwrap_or_default().to_vec() }));
        }
        Ok(out)
    }

    /// Forget rounds the receiver took. Not flushed at once: a crash right after may
    /// send them again, which receivers accept (same samples).
    pub fn remove(&mut self, seqs: &[u64]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(redb::Durability::None).map_err(|e| self.err(e))?;
        let (mut bytes, mut count) = (self.bytes, self.rounds);
        {
            let mut table = txn.open_table(ROUNDS).map_err(|e| self.err(e))?;
            for seq in seqs {
                if let Some(v) = table.remove(*seq).map_err(|e| self.err(e))? {
                    bytes -= v.value().len() as u64;
                    count -= 1;
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        (self.bytes, self.rounds) = (bytes, count);
        Ok(())
    }
}

fn samples_of(value: &[u8]) -> u32 {
    value.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(i: u8) -> Round {
        Round { samples: 10, encoded: vec![i; 96] }
    }

    #[test]
    fn rounds_come_back_in_order_after_reopening_and_the_cap_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rw.redb");
        let mut b = Backlog::open(&path).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.append(&[round(1), round(2), round(3)], 1 << 20).unwrap(), 0);
        drop(b);
        let mut b = Backlog::open(&path).unwrap();
        assert_eq!(b.bytes(), 300);
        let first = b.oldest(20).unwrap();
        assert_eq!(first.iter().map(|(_, r)| r.encoded[0]).collect::<Vec<_>>(), [1, 2]);
        b.remove(&first.iter().map(|(s, _)| *s).collect::<Vec<_>>()).unwrap();
        assert_eq!(b.oldest(1).unwrap()[0].1, round(3), "at least one round even over the limit");
        // New rounds go after the old ones, even after a reopen; over the cap the
        // oldest are dropped and counted.
        assert_eq!(b.append(&[round(4), round(5)], 250).unwrap(), 10);
        let rest: Vec<u8> = b.oldest(1000).unwrap().iter().map(|(_, r)| r.encoded[0]).collect();
        assert_eq!(rest, [4, 5]);
        assert_eq!(b.bytes(), 200);
    }
}

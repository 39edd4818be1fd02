//! Trial checkpoints, kept by the coordinator so that a paused trial can be
//! resumed on any worker without a shared file system.
//!
//! A checkpoint is opaque bytes (the trainer's format) named by
//! (trial, attempt, step). On disk each is one file,
//! `<dir>/<study>/<trial>-<attempt>-<step>.ckpt`: a 20-byte header (magic,
//! size, CRC-32) then the bytes. It is written to a temporary name, synced and
//! renamed, so a crash never leaves a torn checkpoint under the real name,
//! and its CRC is checked on every read. `dir` may be on a shared file system
//! (`--checkpoint-dir`). Without a directory (in-memory coordinators: tests,
//! `hpo bench`) checkpoints live in a map.

use hpo_proto::{CheckpointRef, StudyId, TrialId};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const MAGIC: &[u8; 8] = b"HPOCKPT1";
const HEADER: usize = 20;
/// Default size limit of one checkpoint.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint of trial {trial} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        trial: TrialId,
        size: u64,
        limit: u64,
    },
    #[error("checkpoint of trial {trial} step {step}: {message}")]
    Corrupt {
        trial: TrialId,
        step: u32,
        message: String,
    },
    #[error("checkpoint of trial {0} step {1} not found")]
    NotFound(TrialId, u32),
    #[error("checkpoint storage: {0}")]
    Io(String),
}

type Result<T> = std::result::Result<T, CheckpointError>;

pub struct CheckpointStore {
    dir: Option<PathBuf>,
    memory: Mutex<BTreeMap<(TrialId, u32, u32), Vec<u8>>>,
    max_bytes: u64,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> CheckpointError {
    CheckpointError::Io(format!("{what} {}: {e}", path.display()))
}

impl CheckpointStore {
    /// Checkpoints as files under `dir`, created if missing.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        Ok(CheckpointStore {
            dir: Some(dir.to_path_buf()),
            memory: Mutex::new(BTreeMap::new()),
            max_bytes,
        })
    }

    /// Checkpoints in memory, lost with the process.
    pub fn memory(max_bytes: u64) -> Self {
        CheckpointStore {
            dir: None,
            memory: Mutex::new(BTreeMap::new()),
            max_bytes,
        }
    }

    /// True when checkpoints live in memory (no file I/O to keep off the
    /// async runtime).
    pub fn is_memory(&self) -> bool {
        self.dir.is_none()
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Refuses a declared size over the limit before any byte is received.
    pub fn check_size(&self, trial: TrialId, size: u64) -> Result<()> {
        if size > self.max_bytes {
            return Err(CheckpointError::TooLarge {
                trial,
                size,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    fn path(&self, dir: &Path, trial: TrialId, attempt: u32, step: u32) -> PathBuf {
        dir.join(trial.study.0.to_string())
            .join(format!("{}-{attempt}-{step}.ckpt", trial.number))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(TrialId, u32, u32), Vec<u8>>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `bytes` as the checkpoint `c` names, after checking its size
    /// and CRC-32 against the header the worker sent. Blocking (file I/O and
    /// a sync): call it off the async runtime.
    pub fn put(&self, c: &CheckpointRef, bytes: &[u8]) -> Result<()> {
        self.check_size(c.trial, bytes.len() as u64)?;
        let corrupt = |message: String| CheckpointError::Corrupt {
            trial: c.trial,
            step: c.step,
            message,
        };
        if bytes.len() as u64 != c.size {
            return Err(corrupt(format!(
                "received {} bytes, the header announced {}",
                bytes.len(),
                c.size
            )));
        }
        let crc = crc32fast::hash(bytes);
        if crc != c.crc32 {
            return Err(corrupt(format!(
                "CRC-32 of the data is {crc:08x}, the header announced {:08x}",
                c.crc32
            )));
        }
        let Some(dir) = &self.dir else {
            self.lock()
                .insert((c.trial, c.attempt, c.step), bytes.to_vec());
            return Ok(());
        };
        let path = self.path(dir, c.trial, c.attempt, c.step);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&c.size.to_le_bytes());
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        f.write_all(&header)
            .and_then(|()| f.write_all(bytes))
            .and_then(|()| f.sync_data())
            .map_err(|e| io("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("cannot rename", &tmp, e))?;
        Ok(())
    }

    /// The stored checkpoint of (trial, attempt, step), if there is one
    /// (reads only the header).
    pub fn find(&self, trial: TrialId, attempt: u32, step: u32) -> Result<Option<CheckpointRef>> {
        let Some(dir) = &self.dir else {
            return Ok(self
                .lock()
                .get(&(trial, attempt, step))
                .map(|b| CheckpointRef {
                    trial,
                    attempt,
                    step,
                    size: b.len() as u64,
                    crc32: crc32fast::hash(b),
                }));
        };
        let path = self.path(dir, trial, attempt, step);
        let mut header = [0u8; HEADER];
        let read = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header));
        match read {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot read", &path, e)),
        }
        let (size, crc32) = parse_header(&header).ok_or_else(|| CheckpointError::Corrupt {
            trial,
            step,
            message: format!("{} has no checkpoint header", path.display()),
        })?;
        Ok(Some(CheckpointRef {
            trial,
            attempt,
            step,
            size,
            crc32,
        }))
    }

    /// The bytes of `c`, checked against its size and CRC-32.
    pub fn get(&self, c: &CheckpointRef) -> Result<Vec<u8>> {
        let corrupt = |message: String| CheckpointError::Corrupt {
            trial: c.trial,
            step: c.step,
            message,
        };
        let bytes = match &self.dir {
            None => self
                .lock()
                .get(&(c.trial, c.attempt, c.step))
                .cloned()
                .ok_or(CheckpointError::NotFound(c.trial, c.step))?,
            Some(dir) => {
                let path = self.path(dir, c.trial, c.attempt, c.step);
                let mut all = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(CheckpointError::NotFound(c.trial, c.step));
                    }
                    Err(e) => return Err(io("cannot read", &path, e)),
                };
                let header = all.get(..HEADER).and_then(parse_header);
                let Some((size, crc)) = header else {
                    return Err(corrupt(format!("{} has no header", path.display())));
                };
                if size != c.size || crc != c.crc32 {
                    return Err(corrupt(format!(
                        "{} is not the checkpoint recorded for the trial",
                        path.display()
                    )));
                }
                all.drain(..HEADER);
                all
            }
        };
        if bytes.len() as u64 != c.size || crc32fast::hash(&bytes) != c.crc32 {
            return Err(corrupt(
                "stored bytes fail their size or CRC-32 check".into(),
            ));
        }
        Ok(bytes)
    }

    /// Deletes one checkpoint (a newer one replaced it). Missing is fine.
    pub fn delete(&self, c: &CheckpointRef) -> Result<()> {
        match &self.dir {
            None => {
                self.lock().remove(&(c.trial, c.attempt, c.step));
                Ok(())
            }
            Some(dir) => remove_file(&self.path(dir, c.trial, c.attempt, c.step)),
        }
    }

    /// Deletes every checkpoint of a trial (it ended: nothing will resume it).
    pub fn delete_trial(&self, trial: TrialId) -> Result<()> {
        match &self.dir {
            None => {
                self.lock().retain(|(t, _, _), _| *t != trial);
                Ok(())
            }
            Some(dir) => {
                let study = dir.join(trial.study.0.to_string());
                let prefix = format!("{}-", trial.number);
                let entries = match std::fs::read_dir(&study) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(io("cannot list", &study, e)),
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if name.to_string_lossy().starts_with(&prefix) {
                        remove_file(&entry.path())?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Deletes every checkpoint of a study but `keep` (its best trial's final
    /// model, when the study keeps one).
    pub fn delete_study_except(&self, study: StudyId, keep: Option<&CheckpointRef>) -> Result<()> {
        let Some(keep) = keep else {
            return self.delete_study(study);
        };
        match &self.dir {
            None => {
                self.lock().retain(|(t, a, s), _| {
                    t.study != study || (*t, *a, *s) == (keep.trial, keep.attempt, keep.step)
                });
                Ok(())
            }
            Some(dir) => {
                let kept = self.path(dir, keep.trial, keep.attempt, keep.step);
                let folder = dir.join(study.0.to_string());
                let entries = match std::fs::read_dir(&folder) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(io("cannot list", &folder, e)),
                };
                for entry in entries.flatten() {
                    if entry.path() != kept {
                        remove_file(&entry.path())?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Deletes every checkpoint of a study (it ended).
    pub fn delete_study(&self, study: StudyId) -> Result<()> {
        match &self.dir {
            None => {
                self.lock().retain(|(t, _, _), _| t.study != study);
                Ok(())
            }
            Some(dir) => {
                let path = dir.join(study.0.to_string());
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io("cannot delete", &path, e)),
                }
            }
        }
    }

    /// How many checkpoints are stored (tests and the dashboard).
    pub fn count(&self, study: StudyId) -> usize {
        match &self.dir {
            None => self
                .lock()
                .keys()
                .filter(|(t, _, _)| t.study == study)
                .count(),
            Some(dir) => std::fs::read_dir(dir.join(study.0.to_string())).map_or(0, |d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "ckpt"))
                    .count()
            }),
        }
    }
}

fn parse_header(h: &[u8]) -> Option<(u64, u32)> {
    if h.len() < HEADER || &h[..8] != MAGIC {
        return None;
    }
    let size = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let crc = u32::from_le_bytes(h[16..20].try_into().ok()?);
    Some((size, crc))
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("cannot delete", path, e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reference(bytes: &[u8], step: u32) -> CheckpointRef {
        CheckpointRef {
            trial: TrialId {
                study: StudyId(1),
                number: 2,
            },
            attempt: 1,
            step,
            size: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }

    fn exercise(store: &CheckpointStore) {
        let data = vec![7u8; 5000];
        let c = reference(&data, 3);
        store.put(&c, &data).unwrap();
        assert_eq!(store.find(c.trial, 1, 3).unwrap(), Some(c.clone()));
        assert_eq!(store.find(c.trial, 1, 4).unwrap(), None);
        assert_eq!(store.get(&c).unwrap(), data);
        // A header that does not match the data is refused.
        let mut bad = c.clone();
        bad.crc32 ^= 1;
        assert!(matches!(
            store.put(&bad, &data),
            Err(CheckpointError::Corrupt { .. })
        ));
        let short = CheckpointRef {
            size: 1,
            ..c.clone()
        };
        assert!(store.put(&short, &data).is_err());
        // Over the limit.
        let big = vec![0u8; 10_001];
        assert!(matches!(
            store.put(&reference(&big, 5), &big),
            Err(CheckpointError::TooLarge { .. })
        ));
        let c2 = reference(b"later", 9);
        store.put(&c2, b"later").unwrap();
        assert_eq!(store.count(StudyId(1)), 2);
        store.delete(&c).unwrap();
        assert!(matches!(store.get(&c), Err(CheckpointError::NotFound(..))));
        store.delete_trial(c2.trial).unwrap();
        assert_eq!(store.count(StudyId(1)), 0);
        store.put(&c2, b"later").unwrap();
        store.put(&c, &data).unwrap();
        store.delete_study_except(StudyId(1), Some(&c2)).unwrap();
        assert_eq!(store.count(StudyId(1)), 1);
        assert_eq!(store.get(&c2).unwrap(), b"later");
        store.delete_study(StudyId(1)).unwrap();
        assert_eq!(store.count(StudyId(1)), 0);
    }

    #[test]
    fn memory_store() {
        exercise(&CheckpointStore::memory(10_000));
    }

    #[test]
    fn file_store_checks_crc_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 10_000).unwrap();
        exercise(&store);
        let data = b"weights".to_vec();
        let c = reference(&data, 1);
        store.put(&c, &data).unwrap();
        // Flip a data byte on disk: the read fails its CRC, it is not used.
        let path = dir.path().join("1").join("2-1-1.ckpt");
        let mut raw = std::fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        std::fs::write(&path, raw).unwrap();
        assert!(matches!(
            store.get(&c),
            Err(CheckpointError::Corrupt { .. })
        ));
    }
}

//! The activity log's head file, `<data_dir>/audit.head`: how many events the log held at its
//! last fsync and the hash of the last one, so that removing lines from the end of the log (a
//! valid chain, only shorter) is detected, at start and by `audit verify`.
//!
//! ```text
//! audit.head = "EVAH" | version 1 | 3 zero bytes | events u64 BE | hash 32 | tag 16   (64 bytes)
//! tag        = first 16 bytes of HMAC-SHA-256(chain key, "envault/audit-head" || bytes 0..48)
//! ```
//!
//! Rewritten in place after each fsync of the log (group commit: one per group, not per
//! event), so it never counts a line that is not on disk, and before those events are
//! answered; its own `fdatasync` runs in the background (see [`HeadFile`]). The 64 bytes sit
//! at the start of one sector, which disks write atomically: the same property PostgreSQL's
//! `pg_control` relies on, kept under 512 bytes for it. A crash therefore leaves the old or the
//! new head, never a mix, and a head that does not verify is damage or tampering, never a
//! crash. (Write-temp-then-rename would cost three syncs per group commit instead of one; two
//! alternating slots would let someone who damages the newer one roll the head back.)
//!
//! The tag is keyed: a head file cannot be forged (or rolled back to match a truncated log)
//! without the chain key. Rolling it back to an older copy of itself is possible; see the
//! security model (docs).
//!
//! Also here: the chain key file `audit.key` for root-key backends whose keys never leave them
//! (PKCS#11, transit), `"EVAK" | version 1 | 3 zero bytes | key 32`, 0600.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use zeroize::Zeroizing;

use super::audit_chain::{ChainKey, Head};
use crate::crypto::SecretKey;

const MAGIC: &[u8; 4] = b"EVAH";
const VERSION: u8 = 1;
const SLOT_LEN: usize = 64;
const TAG_LABEL: &[u8] = b"envault/audit-head";
const KEY_MAGIC: &[u8; 4] = b"EVAK";
const KEY_VERSION: u8 = 1;

/// The head file's path beside the log.
pub(super) fn head_path(log: &Path) -> PathBuf {
    log.with_file_name("audit.head")
}

fn encode(key: &ChainKey, head: Head) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    slot[..4].copy_from_slice(MAGIC);
    slot[4] = VERSION;
    slot[8..16].copy_from_slice(&head.events.to_be_bytes());
    slot[16..48].copy_from_slice(&head.hash);
    let tag = key.mac(&[TAG_LABEL, &slot[..48]]);
    slot[48..].copy_from_slice(&tag[..16]);
    slot
}

fn decode(key: &ChainKey, slot: &[u8]) -> Option<Head> {
    if slot.len() != SLOT_LEN || &slot[..4] != MAGIC || slot[4] != VERSION {
        return None;
    }
    let tag = key.mac(&[TAG_LABEL, &slot[..48]]);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&tag[..16], &slot[48..])) {
        return None;
    }
    let events = u64::from_be_bytes(slot[8..16].try_into().ok()?);
    let hash = slot[16..48].try_into().ok()?;
    Some(Head { events, hash })
}

/// Reads the head file: `Ok(None)` if there is none, `Err(problem)` if it does not verify
/// (damaged, or written with another key).
pub(super) fn read(path: &Path, key: &ChainKey) -> std::io::Result<Result<Option<Head>, String>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(None)),
        Err(err) => return Err(err),
    };
    Ok(decode(key, &bytes).map(Some).ok_or_else(|| {
        format!(
            "the head file {} is damaged or was not written with this vault's key",
            path.display()
        )
    }))
}

/// The open head file; written by whoever runs the log's fsync (one at a time).
///
/// The head is written (`pwrite`) after the log's `fdatasync` and before the events it counts
/// are answered, so a daemon crash or `kill -9` never loses it; its own `fdatasync` runs on a
/// background thread, in parallel with the next group commit rather than in front of every
/// answer. Only a power loss or kernel crash in that one-fsync window can leave the head on
/// disk one group behind (never ahead: the log was synced first).
pub(super) struct HeadFile {
    file: File,
    key: ChainKey,
    syncer: Arc<HeadSync>,
    thread: Option<JoinHandle<()>>,
}

/// The background `fdatasync` of the head file: `pending` is set after each write.
struct HeadSync {
    file: File,
    state: Mutex<(bool, bool)>, // (pending, stop)
    wake: Condvar,
}

impl HeadSync {
    fn run(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (pending, stop) = *state;
            if pending {
                state.0 = false;
                drop(state);
                if let Err(err) = self.file.sync_data() {
                    tracing::error!(error = %err, "activity log: cannot sync audit.head");
                }
                state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if stop {
                return;
            }
            state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl HeadFile {
    /// Opens the head file (creating it, 0600, if missing) and records `head` in it, durably.
    pub(super) fn open(path: &Path, key: &ChainKey, head: Head) -> std::io::Result<Self> {
        let created = !path.exists();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        file.write_all_at(&encode(key, head), 0)?;
        file.sync_data()?;
        if created {
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let syncer = Arc::new(HeadSync {
            file: file.try_clone()?,
            state: Mutex::new((false, false)),
            wake: Condvar::new(),
        });
        let shared = Arc::clone(&syncer);
        let thread = std::thread::Builder::new()
            .name("envault-audit-head".into())
            .spawn(move || shared.run())?;
        Ok(Self {
            file,
            key: key.duplicate(),
            syncer,
            thread: Some(thread),
        })
    }

    /// Records `head`: written at once, synced in the background (see the type's docs).
    pub(super) fn write(&mut self, head: Head) -> std::io::Result<()> {
        self.file.write_all_at(&encode(&self.key, head), 0)?;
        let mut state = self.syncer.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = true;
        self.syncer.wake.notify_one();
        Ok(())
    }
}

impl Drop for HeadFile {
    /// Stops the background thread after a last sync, so a clean shutdown leaves the head on
    /// disk.
    fn drop(&mut self) {
        {
            let mut state = self.syncer.state.lock().unwrap_or_else(|p| p.into_inner());
            state.1 = true;
            self.syncer.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Err(err) = self.file.sync_data() {
            tracing::error!(error = %err, "activity log: cannot sync audit.head");
        }
    }
}

/// The chain key kept in `path` (backends that derive none), created on first use.
pub(super) fn load_or_create_key_file(path: &Path) -> std::io::Result<SecretKey> {
    if let Some(key) = load_key_file(path)? {
        return Ok(key);
    }
    let key = SecretKey::generate().map_err(std::io::Error::other)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(40));
    bytes.extend_from_slice(KEY_MAGIC);
    bytes.extend_from_slice(&[KEY_VERSION, 0, 0, 0]);
    bytes.extend_from_slice(key.expose_secret());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(key)
}

/// Reads the chain key file, `None` if there is none.
pub(super) fn load_key_file(path: &Path) -> std::io::Result<Option<SecretKey>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(40));
    match File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes)?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let malformed = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the chain key file {} is damaged", path.display()),
        )
    };
    if bytes.len() != 40 || &bytes[..4] != KEY_MAGIC || bytes[4] != KEY_VERSION {
        return Err(malformed());
    }
    SecretKey::from_slice(&bytes[8..])
        .map(Some)
        .map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ChainKey {
        ChainKey::new(SecretKey::from_slice(&[byte; 32]).unwrap())
    }

    #[test]
    fn head_round_trips_and_damage_or_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.head");
        let k = key(7);
        let mut file =
            HeadFile::open(&path, &k, Head::new(0, super::super::audit_chain::GENESIS)).unwrap();
        file.write(Head {
            events: 5,
            hash: [5; 32],
        })
        .unwrap();
        file.write(Head {
            events: 9,
            hash: [9; 32],
        })
        .unwrap();
        assert_eq!(
            read(&path, &k).unwrap(),
            Ok(Some(Head {
                events: 9,
                hash: [9; 32]
            }))
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SLOT_LEN as u64);
        assert!(read(&path, &key(8)).unwrap().is_err());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read(&path, &k).unwrap().is_err());
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let first = load_or_create_key_file(&path).unwrap();
        let again = load_or_create_key_file(&path).unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
        std::fs::write(&path, b"short").unwrap();
        assert!(load_key_file(&path).is_err());
    }
}

//! The file keystore: every root-key version sealed by the master key in one file,
//! `<data_dir>/keystore.bin`, rewritten whole and atomically on every change.
//!
//! ```text
//! keystore.bin = Envelope(Keystore, label 0, context "envault/keystore") of:
//!   +----------------+------------------------------------------------+
//!   | count u32 BE   | count x ( key id 16 | version u32 BE | key 32 ) |
//!   +----------------+------------------------------------------------+
//! ```
//!
//! Rewrite protocol, so that a crash never loses the keystore and a destroyed key is gone:
//! 1. write the new content to `keystore.bin.tmp`, fsync;
//! 2. overwrite the old `keystore.bin` in place with zeros, fsync (destroyed material does not
//!    linger in freed blocks even sealed);
//! 3. rename the temp file over `keystore.bin`, fsync the directory.
//!
//! On open, if `keystore.bin` does not authenticate but a complete `keystore.bin.tmp` does, the
//! crash fell between steps 2 and 3 and the temp file is promoted. A leftover temp file beside a
//! good `keystore.bin` is an unacknowledged change and is zeroed and removed.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;
use zeroize::Zeroizing;

use super::master::sync_dir;
use super::{master, BackendInfo, KeystoreError, NewKey, RootKeyBackend, RootKeyRef};
use crate::crypto::{Cipher, Envelope, EnvelopeKind, SecretKey};

const FILE_NAME: &str = "keystore.bin";
const TEMP_NAME: &str = "keystore.bin.tmp";
const CONTEXT: &[u8] = b"envault/keystore";
const ENTRY_LEN: usize = 16 + 4 + 32;

/// One live root-key version: its material (kept to rewrite the file) and its expanded cipher.
struct Version {
    material: SecretKey,
    cipher: Arc<Cipher>,
}

/// Root keys sealed in a file by the master key.
pub struct FileKeystore {
    path: PathBuf,
    temp_path: PathBuf,
    master_path: PathBuf,
    master: Cipher,
    /// The activity log's chain key, derived from the master key.
    audit_key: SecretKey,
    keys: Mutex<HashMap<Uuid, BTreeMap<u32, Version>>>,
}

impl FileKeystore {
    /// Opens (or creates) the keystore in `dir`, sealed by the master key file at `master_path`.
    pub fn open(dir: &Path, master_path: &Path) -> Result<Self, KeystoreError> {
        let master_key = master::load_or_create(master_path)?;
        let audit_key = master::derive_audit_key(&master_key)?;
        let master = Cipher::new(&master_key);
        drop(master_key);
        let store = Self {
            path: dir.join(FILE_NAME),
            temp_path: dir.join(TEMP_NAME),
            master_path: master_path.to_path_buf(),
            master,
            audit_key,
            keys: Mutex::new(HashMap::new()),
        };
        let loaded = store.recover()?;
        *store.lock() = loaded;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, BTreeMap<u32, Version>>> {
        // A panic while holding this lock cannot leave the map half-updated (every mutation is a
        // single insert/remove after the file write), so a poisoned lock is still consistent.
        self.keys
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn recover(&self) -> Result<HashMap<Uuid, BTreeMap<u32, Version>>, KeystoreError> {
        let main = read_optional(&self.path)?;
        let temp = read_optional(&self.temp_path)?;
        match (main, temp) {
            (None, None) => Ok(HashMap::new()),
            (Some(main), temp) => match self.decode(main) {
                Ok(keys) => {
                    if temp.is_some() {
                        wipe_and_remove(&self.temp_path)?;
                    }
                    Ok(keys)
                }
                Err(err) => match temp.map(|t| self.decode(t)) {
                    Some(Ok(keys)) => {
                        std::fs::rename(&self.temp_path, &self.path).map_err(io(&self.path))?;
                        sync_dir(self.dir())?;
                        Ok(keys)
                    }
                    _ => Err(err),
                },
            },
            (None, Some(temp)) => {
                // Step 3 never ran for the very first write; the temp file is complete if it opens.
                let keys = self.decode(temp)?;
                std::fs::rename(&self.temp_path, &self.path).map_err(io(&self.path))?;
                sync_dir(self.dir())?;
                Ok(keys)
            }
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn decode(
        &self,
        sealed: Vec<u8>,
    ) -> Result<HashMap<Uuid, BTreeMap<u32, Version>>, KeystoreError> {
        let corrupt = || KeystoreError::Corrupt(self.path.clone());
        let (_, plain) = Envelope(EnvelopeKind::Keystore)
            .open(&self.master, CONTEXT, sealed)
            .map_err(|_| KeystoreError::DoesNotOpen {
                keystore: self.path.clone(),
                master: self.master_path.clone(),
            })?;
        let plain = Zeroizing::new(plain);
        let count = plain
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(corrupt)?;
        let body = &plain[4..];
        if body.len() != count.checked_mul(ENTRY_LEN).ok_or_else(corrupt)? {
            return Err(corrupt());
        }
        let mut keys: HashMap<Uuid, BTreeMap<u32, Version>> = HashMap::new();
        for entry in body.chunks_exact(ENTRY_LEN) {
            let key_id = Uuid::from_slice(&entry[..16]).map_err(|_| corrupt())?;
            let version = u32::from_be_bytes([entry[16], entry[17], entry[18], entry[19]]);
            let material = SecretKey::from_slice(&entry[20..])?;
            let cipher = Arc::new(Cipher::new(&material));
            keys.entry(key_id)
                .or_default()
                .insert(version, Version { material, cipher });
        }
        Ok(keys)
    }

    /// Serializes, seals and atomically replaces the file (protocol in the module docs).
    fn persist(&self, keys: &HashMap<Uuid, BTreeMap<u32, Version>>) -> Result<(), KeystoreError> {
        let count: usize = keys.values().map(BTreeMap::len).sum();
        let mut plain = Zeroizing::new(Vec::with_capacity(4 + count * ENTRY_LEN));
        plain.extend_from_slice(&(count as u32).to_be_bytes());
        for (key_id, versions) in keys {
            for (version, entry) in versions {
                plain.extend_from_slice(key_id.as_bytes());
                plain.extend_from_slice(&version.to_be_bytes());
                plain.extend_from_slice(entry.material.expose_secret());
            }
        }
        let sealed = Envelope(EnvelopeKind::Keystore).seal(&self.master, 0, CONTEXT, &plain)?;
        write_synced(&self.temp_path, &sealed)?;
        if self.path.exists() {
            overwrite_with_zeros(&self.path)?;
        }
        std::fs::rename(&self.temp_path, &self.path).map_err(io(&self.path))?;
        sync_dir(self.dir())
    }

    fn cipher(&self, key: RootKeyRef) -> Result<Arc<Cipher>, KeystoreError> {
        self.lock()
            .get(&key.key_id)
            .and_then(|versions| versions.get(&key.version))
            .map(|v| Arc::clone(&v.cipher))
            .ok_or(KeystoreError::NoSuchVersion(key.key_id, key.version))
    }
}

impl FileKeystore {
    /// Stores `material` as exactly `key`. Fails if that version exists. The service goes
    /// through [`RootKeyBackend::create`] / [`RootKeyBackend::rotate`]; tools and the fuzz
    /// seeds use this to write chosen versions.
    pub fn insert(&self, key: RootKeyRef, material: SecretKey) -> Result<(), KeystoreError> {
        let mut keys = self.lock();
        if keys
            .get(&key.key_id)
            .is_some_and(|v| v.contains_key(&key.version))
        {
            return Err(KeystoreError::VersionExists(key.key_id, key.version));
        }
        let cipher = Arc::new(Cipher::new(&material));
        keys.entry(key.key_id)
            .or_default()
            .insert(key.version, Version { material, cipher });
        if let Err(err) = self.persist(&keys) {
            // Not durable, so not created: forget it again.
            if let Some(versions) = keys.get_mut(&key.key_id) {
                versions.remove(&key.version);
                if versions.is_empty() {
                    keys.remove(&key.key_id);
                }
            }
            return Err(err);
        }
        Ok(())
    }
}

impl RootKeyBackend for FileKeystore {
    fn describe(&self) -> BackendInfo {
        BackendInfo {
            kind: "file",
            location: self.path.display().to_string(),
            remote: false,
        }
    }

    fn audit_chain_key(&self) -> Result<Option<SecretKey>, KeystoreError> {
        Ok(Some(SecretKey::from_slice(self.audit_key.expose_secret())?))
    }

    fn create(&self, key_id: Uuid, material: NewKey) -> Result<(), KeystoreError> {
        let material = match material {
            NewKey::Generate => SecretKey::generate()?,
            NewKey::Import(material) => material,
        };
        self.insert(RootKeyRef { key_id, version: 1 }, material)
    }

    fn rotate(&self, key: RootKeyRef) -> Result<(), KeystoreError> {
        self.insert(key, SecretKey::generate()?)
    }

    fn seal(
        &self,
        key: RootKeyRef,
        kind: EnvelopeKind,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeystoreError> {
        let cipher = self.cipher(key)?;
        Ok(Envelope(kind).seal(&cipher, key.version, context, plaintext)?)
    }

    fn open(
        &self,
        key_id: Uuid,
        kind: EnvelopeKind,
        context: &[u8],
        sealed: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let version = Envelope(kind).label(&sealed)?;
        let cipher = self.cipher(RootKeyRef { key_id, version })?;
        let (_, plain) = Envelope(kind).open(&cipher, context, sealed)?;
        Ok(Zeroizing::new(plain))
    }

    fn destroy(&self, key_id: Uuid, versions: Option<&[u32]>) -> Result<(), KeystoreError> {
        let mut keys = self.lock();
        let Some(existing) = keys.get_mut(&key_id) else {
            return Ok(());
        };
        // Removed entries are kept aside until the file no longer holds them; dropping them
        // zeroizes the in-memory material and key schedules.
        let removed: Vec<(u32, Version)> = match versions {
            None => std::mem::take(existing).into_iter().collect(),
            Some(list) => list
                .iter()
                .filter_map(|v| existing.remove(v).map(|entry| (*v, entry)))
                .collect(),
        };
        if existing.is_empty() {
            keys.remove(&key_id);
        }
        if let Err(err) = self.persist(&keys) {
            let slot = keys.entry(key_id).or_default();
            slot.extend(removed);
            return Err(err);
        }
        drop(removed);
        Ok(())
    }

    fn versions(&self, key_id: Uuid) -> Result<Vec<u32>, KeystoreError> {
        Ok(self
            .lock()
            .get(&key_id)
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default())
    }

    fn key_ids(&self) -> Result<Vec<Uuid>, KeystoreError> {
        Ok(self.lock().keys().copied().collect())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, KeystoreError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io(path)(err)),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn overwrite_with_zeros(path: &Path) -> Result<(), KeystoreError> {
    let len = std::fs::metadata(path).map_err(io(path))?.len() as usize;
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    file.write_all(&vec![0u8; len]).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn wipe_and_remove(path: &Path) -> Result<(), KeystoreError> {
    overwrite_with_zeros(path)?;
    std::fs::remove_file(path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> FileKeystore {
        FileKeystore::open(dir, &dir.join("master.key")).unwrap()
    }

    fn key(version: u32) -> RootKeyRef {
        RootKeyRef {
            key_id: Uuid::from_u128(7),
            version,
        }
    }

    #[test]
    fn survives_reopen_and_destroys_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let material = [0x5Au8; 32];
        let sealed = {
            let ks = open(dir.path());
            ks.insert(key(1), SecretKey::from_slice(&material).unwrap())
                .unwrap();
            ks.seal(key(1), EnvelopeKind::AppWrap, b"c", b"dek")
                .unwrap()
        };
        let ks = open(dir.path());
        assert_eq!(ks.versions(key(1).key_id).unwrap(), vec![1]);
        let plain = ks
            .open(key(1).key_id, EnvelopeKind::AppWrap, b"c", sealed.clone())
            .unwrap();
        assert_eq!(plain.as_slice(), b"dek");
        ks.destroy(key(1).key_id, None).unwrap();
        assert!(ks
            .open(key(1).key_id, EnvelopeKind::AppWrap, b"c", sealed.clone())
            .is_err());
        drop(ks);
        let ks = open(dir.path());
        assert!(ks.versions(key(1).key_id).unwrap().is_empty());
        assert!(ks
            .open(key(1).key_id, EnvelopeKind::AppWrap, b"c", sealed)
            .is_err());
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(32).any(|w| w == material));
        }
    }

    #[test]
    fn versions_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let ks = open(dir.path());
        ks.insert(key(1), SecretKey::generate().unwrap()).unwrap();
        assert!(matches!(
            ks.insert(key(1), SecretKey::generate().unwrap()),
            Err(KeystoreError::VersionExists(..))
        ));
        ks.insert(key(2), SecretKey::generate().unwrap()).unwrap();
        ks.destroy(key(1).key_id, Some(&[1])).unwrap();
        assert_eq!(ks.versions(key(1).key_id).unwrap(), vec![2]);
    }

    #[test]
    fn crash_between_zeroing_and_rename_recovers_from_temp() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ks = open(dir.path());
            ks.insert(key(1), SecretKey::generate().unwrap()).unwrap();
        }
        // Simulate: a complete temp file written, the main file zeroed, no rename yet.
        let good = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        std::fs::write(dir.path().join(TEMP_NAME), &good).unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![0u8; good.len()]).unwrap();
        let ks = open(dir.path());
        assert_eq!(ks.versions(key(1).key_id).unwrap(), vec![1]);
        assert!(!dir.path().join(TEMP_NAME).exists());
    }

    #[test]
    fn wrong_master_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ks = open(dir.path());
            ks.insert(key(1), SecretKey::generate().unwrap()).unwrap();
        }
        std::fs::write(dir.path().join("master.key"), [1u8; 32]).unwrap();
        assert!(matches!(
            FileKeystore::open(dir.path(), &dir.path().join("master.key")),
            Err(KeystoreError::DoesNotOpen { .. })
        ));
    }
}

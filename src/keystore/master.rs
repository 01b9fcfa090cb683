//! The master key file: 32 random bytes, mode 0600, created once at first start. It seals the
//! keystore file, and the activity log's chain key is derived from it (never stored).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use super::KeystoreError;
use crate::crypto::secret::KEY_LEN;
use crate::crypto::SecretKey;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the master key at `path`, creating it (0600, `O_EXCL`, fsynced) if it does not exist.
pub fn load_or_create(path: &Path) -> Result<SecretKey, KeystoreError> {
    match OpenOptions::new().read(true).open(path) {
        Ok(mut file) => {
            let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_LEN));
            file.read_to_end(&mut bytes).map_err(io(path))?;
            SecretKey::from_slice(&bytes).map_err(|_| KeystoreError::Corrupt(path.to_path_buf()))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate()?;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
            file.write_all(key.expose_secret()).map_err(io(path))?;
            file.sync_all().map_err(io(path))?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            Ok(key)
        }
        Err(err) => Err(io(path)(err)),
    }
}

/// Label of the activity log's chain key: HMAC-SHA-256(master key, label). A separate label
/// keeps the derived key independent of the master key's other use (sealing the keystore).
const AUDIT_KEY_LABEL: &[u8] = b"envault/audit-chain-key/v1";

/// The activity log's chain key, derived from the master key.
pub fn derive_audit_key(master: &SecretKey) -> Result<SecretKey, KeystoreError> {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(master.expose_secret())
        .map_err(|_| KeystoreError::Backend("HMAC rejected a 32-byte key".into()))?;
    mac.update(AUDIT_KEY_LABEL);
    let derived: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(mac.finalize().into_bytes().into());
    Ok(SecretKey::from_slice(derived.as_slice())?)
}

/// The chain key from an existing master key file, creating nothing (offline `audit verify`).
pub fn audit_key_from_file(path: &Path) -> Result<SecretKey, KeystoreError> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_LEN));
    OpenOptions::new()
        .read(true)
        .open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(io(path))?;
    let master =
        SecretKey::from_slice(&bytes).map_err(|_| KeystoreError::Corrupt(path.to_path_buf()))?;
    derive_audit_key(&master)
}

/// fsyncs a directory so that a rename or create inside it is durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), KeystoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

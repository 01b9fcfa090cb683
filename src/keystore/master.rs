//! The master key file: 32 random bytes, mode 0600, created once at first start. It seals the
//! keystore file and nothing else.

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

/// fsyncs a directory so that a rename or create inside it is durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), KeystoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

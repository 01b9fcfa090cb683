//! Root keys in a PKCS#11 token (an HSM; SoftHSM2 in tests), through `cryptoki`.
//!
//! Each root-key version is one token object: an AES-256 secret key with `CKA_TOKEN`,
//! `CKA_PRIVATE`, `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`, labelled `envault:<key id>:v<n>`.
//! Generated keys are made by `C_GenerateKey` inside the token and never leave it; imported
//! material enters once through `C_CreateObject` with the same attributes and is zeroized here.
//!
//! DEKs are sealed with `CKM_AES_GCM` inside the token into envault's ordinary envelope (same
//! header, 12-byte nonce, ciphertext and tag; AAD = header || context), so a PKCS#11 envelope
//! has exactly the layout of a file-backend one. A shred is `C_DestroyObject` of every version.
//!
//! Sessions are not `Sync`, and a slow or hung token must not hold a request forever: each
//! session lives on its own worker thread, calls are jobs sent to the pool, and a caller waits
//! at most the configured timeout before failing with [`KeystoreError::Unavailable`]. A worker
//! whose session broke (token removed, device error) opens and logs in a fresh one on its next
//! job, so the daemon recovers by itself.
//!
//! Parts: `backend` (the [`RootKeyBackend`](super::RootKeyBackend) impl); here, the token, its
//! worker sessions, object labels and templates.

mod backend;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use uuid::Uuid;
use zeroize::Zeroize;

use super::secrets::read_credential;
use super::worker_pool::WorkerPool;
use super::{KeystoreError, NewKey, RootKeyRef};
use crate::config::Pkcs11Config;

/// Sessions (and worker threads) kept open on the token.
const WORKERS: usize = 4;
const NONCE_LEN: usize = 12;
const TAG_BITS: u64 = 128;

/// What every worker shares: the library, the slot, the PIN (to log in again) and a cache of
/// object handles (valid across all sessions of this process).
struct Token {
    pkcs11: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    handles: Mutex<HashMap<RootKeyRef, ObjectHandle>>,
}

/// One worker thread's session, reopened when it breaks.
struct Worker {
    token: Arc<Token>,
    session: Option<Session>,
}

/// The PKCS#11 backend.
pub struct Pkcs11Keystore {
    pool: WorkerPool<Worker>,
    location: String,
}

impl Pkcs11Keystore {
    /// Loads the module, finds the token by label, logs in and starts the session workers.
    /// Every failure is one sentence for the operator.
    pub fn open(config: &Pkcs11Config) -> Result<Self, KeystoreError> {
        Self::validate(config)?;
        let pin = read_credential(
            "PKCS#11 PIN",
            &config.pin_file,
            "ENVAULT_PKCS11_PIN",
            "keystore.pkcs11.pin_file",
        )?;
        Self::connect(config, &pin)
    }

    /// Checks the settings that need no token: the timeout and that the module exists.
    fn validate(config: &Pkcs11Config) -> Result<Duration, KeystoreError> {
        let timeout = config.timeout;
        if timeout.is_zero() {
            return Err(KeystoreError::Config(
                "keystore.pkcs11.timeout must be above zero".into(),
            ));
        }
        let module = &config.module;
        if !module.is_file() {
            return Err(KeystoreError::Config(format!(
                "the PKCS#11 module {} does not exist (keystore.pkcs11.module)",
                module.display()
            )));
        }
        Ok(timeout)
    }

    /// [`Pkcs11Keystore::open`] with the PIN given (tools and tests that hold it already).
    pub fn connect(config: &Pkcs11Config, pin: &str) -> Result<Self, KeystoreError> {
        let timeout = Self::validate(config)?;
        let module = &config.module;
        let pin = AuthPin::new(pin.into());
        let pkcs11 = Pkcs11::new(module).map_err(|e| {
            KeystoreError::Config(format!(
                "cannot load the PKCS#11 module {}: {e}",
                module.display()
            ))
        })?;
        pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .or_else(|e| match e {
                CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _) => Ok(()),
                other => Err(other),
            })
            .map_err(|e| config_error(module, "initialize", e))?;
        let slot = find_slot(&pkcs11, &config.token_label, module)?;
        let token = Arc::new(Token {
            pkcs11,
            slot,
            pin,
            handles: Mutex::new(HashMap::new()),
        });
        // The first session logs in here, so that a wrong PIN stops the start.
        let mut first = Worker {
            token: Arc::clone(&token),
            session: None,
        };
        first.session().map_err(|e| match e {
            KeystoreError::Backend(why) | KeystoreError::Unavailable(why) => {
                KeystoreError::Config(format!("PKCS#11 token {:?}: {why}", config.token_label))
            }
            other => other,
        })?;
        let mut workers = vec![first];
        workers.extend((1..WORKERS).map(|_| Worker {
            token: Arc::clone(&token),
            session: None,
        }));
        let pool = WorkerPool::start("PKCS#11 token", workers, timeout)
            .map_err(|e| KeystoreError::Config(format!("cannot start PKCS#11 workers: {e}")))?;
        Ok(Self {
            pool,
            location: format!("{} token {:?}", module.display(), config.token_label),
        })
    }

    /// Runs `work` on a session worker, waiting at most the timeout.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Worker) -> Result<T, KeystoreError> + Send + 'static,
    ) -> Result<T, KeystoreError> {
        self.pool.run(work)
    }

    fn exists(&self, key: RootKeyRef) -> Result<bool, KeystoreError> {
        self.run(move |w| Ok(w.find(key)?.is_some()))
    }

    fn add_version(&self, key: RootKeyRef, material: NewKey) -> Result<(), KeystoreError> {
        if self.exists(key)? {
            return Err(KeystoreError::VersionExists(key.key_id, key.version));
        }
        self.run(move |w| {
            let session = w.session()?;
            let created = match material {
                NewKey::Generate => {
                    let mut template = key_template(key);
                    template.push(Attribute::ValueLen(32.into()));
                    session.generate_key(&Mechanism::AesKeyGen, &template)
                }
                NewKey::Import(material) => {
                    let mut template = key_template(key);
                    template.push(Attribute::Value(material.expose_secret().to_vec()));
                    let created = session.create_object(&template);
                    for attribute in &mut template {
                        if let Attribute::Value(bytes) = attribute {
                            bytes.zeroize();
                        }
                    }
                    created
                }
            };
            let handle = created.map_err(|e| w.fail("create a key", e))?;
            w.token.cache().insert(key, handle);
            Ok(())
        })
    }

    /// Every envault object's (key, version, handle).
    fn scan(&self) -> Result<Vec<(RootKeyRef, ObjectHandle)>, KeystoreError> {
        self.run(|w| {
            let result = scan_session(w.session()?);
            result.map_err(|e| w.fail("search the token", e))
        })
    }
}

fn scan_session(session: &Session) -> Result<Vec<(RootKeyRef, ObjectHandle)>, CkError> {
    let handles = session.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Token(true),
    ])?;
    let mut found = Vec::new();
    for handle in handles {
        for attribute in session.get_attributes(handle, &[AttributeType::Label])? {
            if let Attribute::Label(label) = attribute {
                if let Some(key) = parse_label(&label) {
                    found.push((key, handle));
                }
            }
        }
    }
    Ok(found)
}

impl Token {
    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<RootKeyRef, ObjectHandle>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Worker {
    /// This worker's logged-in session, opened (and logged in) on first use or after a break.
    fn session(&mut self) -> Result<&Session, KeystoreError> {
        if self.session.is_none() {
            let session = self
                .token
                .pkcs11
                .open_rw_session(self.token.slot)
                .map_err(|e| KeystoreError::Unavailable(format!("cannot open a session: {e}")))?;
            match session.login(UserType::User, Some(&self.token.pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                    return Err(KeystoreError::Config(
                        "the token refused the PIN (wrong PIN in keystore.pkcs11.pin_file or ENVAULT_PKCS11_PIN)".into(),
                    ))
                }
                Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                    return Err(KeystoreError::Config("the token's user PIN is locked".into()))
                }
                Err(e) => return Err(KeystoreError::Backend(format!("login failed: {e}"))),
            }
            self.session = Some(session);
        }
        self.session
            .as_ref()
            .ok_or_else(|| KeystoreError::Unavailable("no session".into()))
    }

    /// Maps a token error; errors that mean the session is gone drop it (reopened next job).
    fn fail(&mut self, action: &str, err: CkError) -> KeystoreError {
        let rv = match &err {
            CkError::Pkcs11(rv, _) => Some(*rv),
            _ => None,
        };
        match rv {
            Some(
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn,
            ) => {
                self.session = None;
                self.token.cache().clear();
                KeystoreError::Unavailable(format!("the token could not {action}: {err}"))
            }
            Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid) => {
                self.token.cache().clear();
                KeystoreError::Backend(format!("the token could not {action}: {err}"))
            }
            _ => KeystoreError::Backend(format!("the token could not {action}: {err}")),
        }
    }

    /// The object of one key version (cached handle, else a search by label).
    fn find(&mut self, key: RootKeyRef) -> Result<Option<ObjectHandle>, KeystoreError> {
        if let Some(handle) = self.token.cache().get(&key) {
            return Ok(Some(*handle));
        }
        let found = {
            let session = self.session()?;
            session.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label(key)),
            ])
        };
        let found = found.map_err(|e| self.fail("search the token", e))?;
        let handle = found.first().copied();
        if let Some(handle) = handle {
            self.token.cache().insert(key, handle);
        }
        Ok(handle)
    }

    fn handle(&mut self, key: RootKeyRef) -> Result<ObjectHandle, KeystoreError> {
        self.find(key)?
            .ok_or(KeystoreError::NoSuchVersion(key.key_id, key.version))
    }
}

fn config_error(module: &Path, action: &str, err: CkError) -> KeystoreError {
    KeystoreError::Config(format!(
        "the PKCS#11 module {} failed to {action}: {err}",
        module.display()
    ))
}

/// The slot whose token has this label.
fn find_slot(pkcs11: &Pkcs11, wanted: &str, module: &Path) -> Result<Slot, KeystoreError> {
    let slots = pkcs11
        .get_slots_with_initialized_token()
        .map_err(|e| config_error(module, "list slots", e))?;
    let mut labels = Vec::new();
    for slot in slots {
        let info = pkcs11
            .get_token_info(slot)
            .map_err(|e| config_error(module, "read token info", e))?;
        let label = info.label().trim_end().to_string();
        if label == wanted {
            return Ok(slot);
        }
        labels.push(label);
    }
    Err(KeystoreError::Config(format!(
        "no PKCS#11 token labelled {wanted:?} in {} (found: {}); check keystore.pkcs11.token_label",
        module.display(),
        if labels.is_empty() {
            "none".to_string()
        } else {
            format!("{labels:?}")
        }
    )))
}

fn label(key: RootKeyRef) -> Vec<u8> {
    format!("envault:{}:v{}", key.key_id, key.version).into_bytes()
}

fn parse_label(label: &[u8]) -> Option<RootKeyRef> {
    let text = std::str::from_utf8(label).ok()?.strip_prefix("envault:")?;
    let (id, version) = text.split_once(":v")?;
    Some(RootKeyRef {
        key_id: Uuid::parse_str(id).ok()?,
        version: version.parse().ok()?,
    })
}

/// Attributes of a root-key object: a sensitive, non-extractable AES-256 token key usable only
/// to encrypt and decrypt.
fn key_template(key: RootKeyRef) -> Vec<Attribute> {
    let mut id = key.key_id.as_bytes().to_vec();
    id.extend_from_slice(&key.version.to_be_bytes());
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label(key)),
        Attribute::Id(id),
    ]
}

fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        let key = RootKeyRef {
            key_id: Uuid::from_u128(42),
            version: 7,
        };
        assert_eq!(parse_label(&label(key)), Some(key));
        assert_eq!(parse_label(b"other:label"), None);
    }
}

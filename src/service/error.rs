//! The service layer's error: every rule violation a request can hit, each with a stable API
//! code. The server maps these to HTTP statuses in one match (`server::error`).

use crate::crypto::CryptoError;
use crate::keystore::KeystoreError;
use crate::store::StoreError;

/// Errors of the service layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Malformed or invalid input; nothing changed.
    #[error("{0}")]
    BadRequest(String),
    /// No or unknown bearer token.
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    /// The bearer token is known but past its expiry.
    #[error("the bearer token has expired")]
    TokenExpired,
    /// The token may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The named resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Name taken or a state conflict.
    #[error("{0}")]
    Conflict(String),
    /// An identical authorization exists.
    #[error("an access policy with identical attributes and roles already exists")]
    DuplicatePolicy,
    /// No `databases` → key `Reader` authorization.
    #[error("{0}")]
    NotAuthorizedForKey(String),
    /// The key still protects resources (deleting needs force).
    #[error("{0}")]
    KeyInUse(String),
    /// The key is suspended.
    #[error("{0}")]
    KeySuspended(String),
    /// The key is scheduled for destruction (cancel the deletion to use it again).
    #[error("{0}")]
    KeyPendingDestruction(String),
    /// The key was shredded.
    #[error("{0}")]
    KeyDestroyed(String),
    /// The database is soft-deleted.
    #[error("{0}")]
    DatabaseDeleted(String),
    /// A value or body exceeds its limit.
    #[error("{0}")]
    TooLarge(String),
    /// The data dir's filesystem is at its free-space floor; nothing was written.
    #[error("{0}")]
    StorageFull(String),
    /// Storage failed; the request may not have taken effect. (`StoreError::Unavailable`, a
    /// shared database that is down, is answered 503 `store_unavailable`.)
    #[error("{}", store_message(.0))]
    Store(#[from] StoreError),
    /// The keystore failed.
    #[error("keystore failure")]
    Keystore(#[source] KeystoreError),
    /// Stored data failed to decrypt: corruption or tampering. Only for data that did not
    /// authenticate (or, once opened, is not what envault wrote there).
    #[error("stored data failed to authenticate")]
    Integrity,
    /// One record's stored bytes are damaged (the store's checksum fails) or do not
    /// authenticate; the message names the record. The database's other records are not
    /// affected.
    #[error("record {0:?} is damaged: its stored bytes fail their integrity check; the other records are not affected; write it again or restore the database from a backup")]
    RecordDamaged(String),
    /// The operating system's random generator failed; nothing was created.
    #[error("the random generator failed")]
    Random,
    /// A task running part of the request panicked or was cancelled (the cause is logged).
    #[error("an internal task failed")]
    TaskFailed(String),
    /// An internal invariant does not hold (a catalog entry another one names is missing, an
    /// answer of the wrong shape): a bug, never the caller's input. The detail is logged.
    #[error("internal error")]
    Internal(&'static str),
    /// The activity log could not be written; the action is not acknowledged.
    #[error("storage failure")]
    AuditLog(String),
    /// The data dir could not be created or inspected (free space).
    #[error("storage failure")]
    DataDir(String),
    /// The operator token file could not be written.
    #[error("storage failure")]
    TokenFile(String),
    /// The root-key backend (HSM, transit server) is unreachable or too slow; nothing changed
    /// and the request may be retried.
    #[error("{0}")]
    KeyBackendUnavailable(String),
    /// The root-key backend answered and refused the operation (an HSM error, a transit
    /// server's 4xx); the message names the backend's reason. Nothing changed.
    #[error("the root-key backend refused: {0}")]
    KeyBackendRefused(String),
    /// The backup target (directory or S3 bucket) failed or refused; the message
    /// names the target and its answer (never credentials), so the operator can act on it.
    #[error("backup target failure: {0}")]
    BackupTarget(String),
    /// A secure import or an import token was refused (its own codes); nothing changed but,
    /// once the RSA decryption was attempted, one use of the token.
    #[error(transparent)]
    Import(super::ImportError),
    /// The daemon refuses to start on this data dir: unsafe (open permissions) or
    /// incomplete (a missing master key, keystore or store, an activity log cut short).
    #[error(transparent)]
    UnsafeDataDir(#[from] super::DataDirError),
}

impl ServiceError {
    /// Whether this refuses the caller (logged as `denied`) rather than failing.
    pub fn is_denial(&self) -> bool {
        matches!(
            self,
            ServiceError::Unauthenticated
                | ServiceError::TokenExpired
                | ServiceError::Forbidden(_)
                | ServiceError::NotAuthorizedForKey(_)
                | ServiceError::KeySuspended(_)
                | ServiceError::KeyPendingDestruction(_)
                | ServiceError::KeyDestroyed(_)
                | ServiceError::DatabaseDeleted(_)
                | ServiceError::Import(super::ImportError::PlaintextDisabled)
        )
    }

    /// The stable API code.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::BadRequest(_) => "bad_request",
            ServiceError::Unauthenticated => "unauthenticated",
            ServiceError::TokenExpired => "token_expired",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::NotFound(_) => "not_found",
            ServiceError::Conflict(_) => "conflict",
            ServiceError::DuplicatePolicy => "duplicate_policy",
            ServiceError::NotAuthorizedForKey(_) => "not_authorized_for_key",
            ServiceError::KeyInUse(_) => "key_in_use",
            ServiceError::KeySuspended(_) => "key_suspended",
            ServiceError::KeyPendingDestruction(_) => "key_pending_destruction",
            ServiceError::KeyDestroyed(_) => "key_destroyed",
            ServiceError::DatabaseDeleted(_) => "database_deleted",
            ServiceError::TooLarge(_) => "too_large",
            ServiceError::StorageFull(_) => "storage_full",
            ServiceError::Store(StoreError::Unavailable(_)) => "store_unavailable",
            ServiceError::Store(StoreError::Damaged(_)) => "integrity_error",
            // Stored bytes that fail their checksum or do not decode: damaged data, answered
            // like a record that fails to authenticate.
            ServiceError::Store(StoreError::Corrupt { .. }) => "integrity_error",
            ServiceError::Store(_) => "storage_error",
            ServiceError::Keystore(_) => "keystore_error",
            ServiceError::Integrity | ServiceError::RecordDamaged(_) => "integrity_error",
            ServiceError::Random | ServiceError::TaskFailed(_) | ServiceError::Internal(_) => {
                "internal_error"
            }
            // Local storage beside the store: the same answer as a store failure.
            ServiceError::AuditLog(_) | ServiceError::DataDir(_) | ServiceError::TokenFile(_) => {
                "storage_error"
            }
            ServiceError::KeyBackendUnavailable(_) => "key_backend_unavailable",
            ServiceError::KeyBackendRefused(_) => "key_backend_refused",
            ServiceError::BackupTarget(_) => "backup_target_error",
            ServiceError::Import(err) => err.code(),
            // Start-up only; never answered to a request.
            ServiceError::UnsafeDataDir(_) => "data_dir_refused",
        }
    }
}

impl From<KeystoreError> for ServiceError {
    fn from(err: KeystoreError) -> Self {
        match err {
            // A ciphertext that does not open under the key is the caller's bad input.
            KeystoreError::Crypto(CryptoError::Open) => ServiceError::BadRequest(
                "ciphertext does not authenticate under this key and AAD".into(),
            ),
            KeystoreError::Crypto(CryptoError::Malformed(what)) => {
                ServiceError::BadRequest(format!("malformed ciphertext: {what}"))
            }
            KeystoreError::NoSuchVersion(..) => ServiceError::BadRequest(
                "ciphertext was wrapped by a key version that no longer exists".into(),
            ),
            KeystoreError::Unavailable(why) => ServiceError::KeyBackendUnavailable(why),
            KeystoreError::Unsupported(why) => ServiceError::BadRequest(why),
            KeystoreError::Backend(why) => ServiceError::KeyBackendRefused(why),
            other => ServiceError::Keystore(other),
        }
    }
}

impl ServiceError {
    /// For unwraps of stored material (DEKs, backup DEKs): a backend that is unavailable stays
    /// a 503, every other failure means the stored data does not open (integrity).
    pub(crate) fn from_stored_open(err: KeystoreError) -> Self {
        match err {
            KeystoreError::Unavailable(why) => ServiceError::KeyBackendUnavailable(why),
            _ => ServiceError::Integrity,
        }
    }
}

/// What a client is told of a store failure: that a shared store is down (retry later), or
/// only that storage failed (causes go to the daemon's log).
fn store_message(err: &StoreError) -> &'static str {
    match err {
        StoreError::Unavailable(_) => "the store is unavailable; retry later",
        StoreError::Corrupt { .. } => "stored data failed its integrity check",
        _ => "storage failure",
    }
}

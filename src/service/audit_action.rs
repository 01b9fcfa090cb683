//! The actions the activity log records. Each variant's string is what the log stores and
//! what `GET /v1/audit?action=` filters on; the HMAC chain covers it, so a string never
//! changes once released.

/// One kind of logged request or daemon action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A request whose credentials did not authenticate.
    AuthDenied,
    /// `POST /v1/keys`.
    SecretsCreate,
    /// Key deletion: immediate, a refused transit deletion, or a scheduled destruction run.
    SecretsDelete,
    /// `POST /v1/keys/{key}/enable`.
    SecretsEnable,
    /// `POST /v1/keys/{key}/disable`.
    SecretsDisable,
    /// A rotation: started, finished, or due by policy and failed to start.
    SecretsRotate,
    /// Scheduling a key's destruction after a waiting period.
    SecretsScheduleDeletion,
    /// Cancelling a scheduled destruction.
    SecretsCancelDeletion,
    /// The first approval of a dual-authorization deletion.
    SecretsSetKeyForDeletion,
    /// Withdrawing (or expiring) that approval.
    SecretsUnsetKeyForDeletion,
    /// Setting a key's rotation and deletion policies.
    SecretsSetKeyPolicies,
    /// `POST /v1/import_token`: a new import token for secure import.
    ImportTokenCreate,
    /// `GET /v1/import_token/{id}`.
    ImportTokenRead,
    /// `POST /v1/keys/{key}/wrap`.
    SecretsWrap,
    /// `POST /v1/keys/{key}/unwrap`.
    SecretsUnwrap,
    /// `POST /v1/keys/{key}/rewrap`: app-held material re-wrapped under the newest version
    /// (not the rotation job, which logs [`Action::SecretsRotate`]).
    SecretsRewrap,
    /// Transit `keys/<name>` creation.
    TransitCreate,
    /// Transit `keys/<name>` read.
    TransitRead,
    /// Transit `keys/<name>/config`.
    TransitConfig,
    /// Transit `encrypt/<name>`.
    TransitEncrypt,
    /// Transit `decrypt/<name>`.
    TransitDecrypt,
    /// Transit `rewrap/<name>`.
    TransitRewrap,
    /// Transit `datakey/{plaintext|wrapped}/<name>`.
    TransitDatakey,
    /// KMS v2 `Encrypt`.
    KmsV2Encrypt,
    /// KMS v2 `Decrypt`.
    KmsV2Decrypt,
    /// `POST /v1/databases`.
    DatabasesCreate,
    /// Soft deletion of a database.
    DatabasesDelete,
    /// Restoring a soft-deleted database.
    DatabasesRestore,
    /// The purge of a database whose soft-deletion period ran out.
    DatabasesPurge,
    /// A denied record write.
    RecordsWrite,
    /// A denied record read.
    RecordsRead,
    /// A denied record deletion.
    RecordsDelete,
    /// A denied record listing.
    RecordsList,
    /// A denied record batch.
    RecordsBatch,
    /// `POST /v1/backups`, by hand or by the schedule.
    BackupsCreate,
    /// Deleting a backup.
    BackupsDelete,
    /// Restoring a backup into a new database.
    BackupsRestore,
    /// Removing a purged database's backups once `keep_after_purge` ran out.
    BackupsPurge,
    /// Granting an authorization.
    AuthorizationsCreate,
    /// Revoking an authorization (or removing one whose delegator went).
    AuthorizationsDelete,
    /// Recreating a removed authorization the daemon itself needs.
    AuthorizationsRecreate,
    /// Creating an API token.
    TokensCreate,
    /// Revoking an API token.
    TokensDelete,
}

impl Action {
    /// The string the activity log stores.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::AuthDenied => "auth.denied",
            Action::SecretsCreate => "kms.secrets.create",
            Action::SecretsDelete => "kms.secrets.delete",
            Action::SecretsEnable => "kms.secrets.enable",
            Action::SecretsDisable => "kms.secrets.disable",
            Action::SecretsRotate => "kms.secrets.rotate",
            Action::SecretsScheduleDeletion => "kms.secrets.scheduledeletion",
            Action::SecretsCancelDeletion => "kms.secrets.canceldeletion",
            Action::SecretsSetKeyForDeletion => "kms.secrets.setkeyfordeletion",
            Action::SecretsUnsetKeyForDeletion => "kms.secrets.unsetkeyfordeletion",
            Action::SecretsSetKeyPolicies => "kms.secrets.setkeypolicies",
            Action::ImportTokenCreate => "kms.import-token.create",
            Action::ImportTokenRead => "kms.import-token.read",
            Action::SecretsWrap => "kms.secrets.wrap",
            Action::SecretsUnwrap => "kms.secrets.unwrap",
            Action::SecretsRewrap => "kms.secrets.rewrap",
            Action::TransitCreate => "kms.transit.create",
            Action::TransitRead => "kms.transit.read",
            Action::TransitConfig => "kms.transit.config",
            Action::TransitEncrypt => "kms.transit.encrypt",
            Action::TransitDecrypt => "kms.transit.decrypt",
            Action::TransitRewrap => "kms.transit.rewrap",
            Action::TransitDatakey => "kms.transit.datakey",
            Action::KmsV2Encrypt => "kms.kmsv2.encrypt",
            Action::KmsV2Decrypt => "kms.kmsv2.decrypt",
            Action::DatabasesCreate => "databases.create",
            Action::DatabasesDelete => "databases.delete",
            Action::DatabasesRestore => "databases.restore",
            Action::DatabasesPurge => "databases.purge",
            Action::RecordsWrite => "databases.records.write",
            Action::RecordsRead => "databases.records.read",
            Action::RecordsDelete => "databases.records.delete",
            Action::RecordsList => "databases.records.list",
            Action::RecordsBatch => "databases.records.batch",
            Action::BackupsCreate => "backups.create",
            Action::BackupsDelete => "backups.delete",
            Action::BackupsRestore => "backups.restore",
            Action::BackupsPurge => "backups.purge",
            Action::AuthorizationsCreate => "iam.authorizations.create",
            Action::AuthorizationsDelete => "iam.authorizations.delete",
            Action::AuthorizationsRecreate => "iam.authorizations.recreate",
            Action::TokensCreate => "iam.tokens.create",
            Action::TokensDelete => "iam.tokens.delete",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Action;

    /// The stored strings, written out: a renamed variant must not change what the log holds.
    #[test]
    fn stored_strings_do_not_change() {
        let expected = [
            (Action::AuthDenied, "auth.denied"),
            (Action::SecretsCreate, "kms.secrets.create"),
            (Action::SecretsDelete, "kms.secrets.delete"),
            (Action::SecretsRotate, "kms.secrets.rotate"),
            (Action::ImportTokenCreate, "kms.import-token.create"),
            (Action::SecretsWrap, "kms.secrets.wrap"),
            (Action::TransitDatakey, "kms.transit.datakey"),
            (Action::KmsV2Decrypt, "kms.kmsv2.decrypt"),
            (Action::RecordsBatch, "databases.records.batch"),
            (Action::BackupsPurge, "backups.purge"),
            (
                Action::AuthorizationsRecreate,
                "iam.authorizations.recreate",
            ),
            (Action::TokensDelete, "iam.tokens.delete"),
        ];
        for (action, text) in expected {
            assert_eq!(action.as_str(), text);
            assert_eq!(action.to_string(), text);
        }
    }
}

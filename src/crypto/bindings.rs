//! What each kind of envelope is bound to. These contexts are authenticated (AAD) but not
//! stored, so a ciphertext copied to another place fails to open there.

use super::envelope::context;

/// A record is bound to its database and its record key; its DEK generation is the envelope
/// label, itself authenticated.
pub fn record_context(database_id: &[u8; 16], record_key: &[u8]) -> Vec<u8> {
    context(&[b"record", database_id, record_key])
}

/// A wrapped DEK is bound to its database, its generation and the root key that wraps it; the
/// root key version is the envelope label.
pub fn dek_context(database_id: &[u8; 16], generation: u32, root_key_id: &[u8; 16]) -> Vec<u8> {
    context(&[b"dek", database_id, &generation.to_be_bytes(), root_key_id])
}

/// An app-held ciphertext from the wrap API is bound to its root key and the caller's AAD list.
pub fn app_wrap_context(root_key_id: &[u8; 16], aad: &[String]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![b"app-wrap", root_key_id];
    parts.extend(aad.iter().map(|s| s.as_bytes()));
    context(&parts)
}

/// A backup's DEK is bound to the backup id and the backup key that wraps it.
pub fn backup_dek_context(backup_id: &[u8; 16], backup_key_id: &[u8; 16]) -> Vec<u8> {
    context(&[b"backup-dek", backup_id, backup_key_id])
}

/// A transit ciphertext is bound to its root key and the caller's `associated_data`; the root
/// key version is the envelope label (the `v<N>` of `vault:v<N>:`).
pub fn transit_context(root_key_id: &[u8; 16], associated_data: &[u8]) -> Vec<u8> {
    context(&[b"transit", root_key_id, associated_data])
}

/// A Kubernetes KMS v2 ciphertext is bound to its root key and to that API (the label is the
/// root key version).
pub fn kms_v2_context(root_key_id: &[u8; 16]) -> Vec<u8> {
    context(&[b"kms-v2", root_key_id])
}

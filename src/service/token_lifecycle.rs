//! Token names, lifetimes and last use.
//!
//! A token may carry a time to live; once past it, every request with it is refused with
//! `token_expired` (401). The time of last use is noted in memory on the request path at most
//! about once a minute per token, and a background task persists the noted times in one
//! catalog commit, so authentication never waits on the store.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::catalog::CatalogChange;
use super::{ServiceError, Vault};
use crate::store::TokenRecord;

/// How stale a persisted last use may get before a request notes a new one.
pub const LAST_USE_GRANULARITY: u64 = 60;
/// Shortest time to live a token may be given.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(1);
/// Longest time to live a token may be given (ten years).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(3650 * 86_400);

/// Current time in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339_of(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".into())
}

/// Parses a token's time to live ("30d", "12h", "90m"), within the bounds above.
pub fn parse_ttl(text: &str) -> Result<Duration, ServiceError> {
    crate::config::parse_duration(text)
        .filter(|d| *d >= MIN_TOKEN_TTL && *d <= MAX_TOKEN_TTL)
        .ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "invalid ttl {text:?}: use a duration from 1s to 3650d, such as \"30d\" or \"12h\""
            ))
        })
}

/// Last uses noted since the last persist, by token id (Unix seconds).
#[derive(Default)]
pub(super) struct TokenUse(Mutex<HashMap<String, u64>>);

impl TokenUse {
    /// Notes a use of `record` at `now` if its persisted last use is older than the granularity.
    pub(super) fn note(&self, record: &TokenRecord, now: u64) {
        if record
            .last_used_at
            .is_some_and(|t| now < t.saturating_add(LAST_USE_GRANULARITY))
        {
            return;
        }
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.id.clone(), now);
    }

    fn take(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Vault {
    /// Refuses an expired token (called by `authenticate` once the token is found).
    pub(super) fn check_token_alive(
        &self,
        record: &TokenRecord,
        now: u64,
    ) -> Result<(), ServiceError> {
        if record.expires_at.is_some_and(|at| now >= at) {
            return Err(ServiceError::TokenExpired);
        }
        self.jobs.token_use().note(record, now);
        Ok(())
    }

    /// Persists the last uses noted since the previous call, in one commit; returns how many
    /// tokens were updated. Tokens revoked meanwhile are skipped (never written back).
    pub async fn persist_token_use(&self) -> Result<usize, ServiceError> {
        let noted = self.jobs.token_use().take();
        if noted.is_empty() {
            return Ok(0);
        }
        let _admin = self.admin().await?;
        let updated: Vec<TokenRecord> = {
            let catalog = self.read_catalog();
            catalog
                .tokens_by_hash
                .values()
                .filter_map(|t| {
                    let at = *noted.get(&t.id)?;
                    let mut t = t.clone();
                    t.last_used_at = Some(t.last_used_at.map_or(at, |old| old.max(at)));
                    Some(t)
                })
                .collect()
        };
        if updated.is_empty() {
            return Ok(0);
        }
        let count = updated.len();
        self.commit(updated.into_iter().map(CatalogChange::PutToken).collect())
            .await?;
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec;

    /// A token entry as written before tokens had names, lifetimes and last use: it still
    /// decodes, never expires, and has no name.
    #[test]
    fn token_entries_of_the_first_format_still_decode() {
        let old = br#"EVCT{"id":"tok_0a1b2c3d4e5f","role":"operator","databases":[],"hash":"00ff","created_at":"2026-01-02T03:04:05Z"}"#;
        let mut bytes = old[..4].to_vec();
        bytes.push(1);
        bytes.extend_from_slice(&old[4..]);
        let record: TokenRecord = codec::decode(b"token/tok_0a1b2c3d4e5f", &bytes).unwrap();
        assert_eq!(record.id, "tok_0a1b2c3d4e5f");
        assert_eq!(record.name, None);
        assert_eq!(record.expires_at, None);
        assert_eq!(record.last_used_at, None);
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(parse_ttl("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_ttl("1s").unwrap(), MIN_TOKEN_TTL);
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("3651d").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn last_use_is_noted_at_most_once_per_granularity() {
        let uses = TokenUse::default();
        let mut record = TokenRecord {
            id: "tok_1".into(),
            role: crate::store::TokenRole::App,
            databases: Vec::new(),
            hash: "h".into(),
            created_at: String::new(),
            name: None,
            expires_at: None,
            last_used_at: Some(1_000),
        };
        uses.note(&record, 1_030);
        assert!(uses.take().is_empty());
        uses.note(&record, 1_060);
        assert_eq!(uses.take().get("tok_1"), Some(&1_060));
        record.last_used_at = None;
        uses.note(&record, 5);
        assert_eq!(uses.take().get("tok_1"), Some(&5));
    }
}

//! Key policies and scheduled deletion.

use super::paths::{encode_segment, key_path};
use super::{parse_json, Client, ClientError, Method, NO_BODY};
use crate::api::{
    DeletionApproval, Impact, KeyInfo, KeyPolicyInfo, SetPolicyRequest, ShredReceipt,
};

/// What `DELETE /v1/keys/{key}` did ([`Client::schedule_key_deletion`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDeletion {
    /// The key was deleted now (cryptoshredded when it protected data): the receipt.
    Deleted(ShredReceipt),
    /// The deletion is scheduled: the key, in state `pending_destruction` with its `destroy_at`.
    Scheduled(Box<KeyInfo>),
    /// Under dual authorization, this was the first approval (202): nothing is deleted until a
    /// different operator asks too.
    Approved(DeletionApproval),
}

impl Client {
    /// `GET /v1/keys/{key}/policy`.
    pub async fn key_policy(&self, key: &str) -> Result<KeyPolicyInfo, ClientError> {
        self.call_json(Method::GET, &key_path(key, "/policy"), NO_BODY)
            .await
    }

    /// `PUT /v1/keys/{key}/policy`: `rotate_every` ("90d" | "off") and/or `dual_auth`.
    pub async fn set_key_policy(
        &self,
        key: &str,
        rotate_every: Option<&str>,
        dual_auth: Option<bool>,
    ) -> Result<KeyPolicyInfo, ClientError> {
        let body = SetPolicyRequest {
            rotate_every: rotate_every.map(str::to_string),
            dual_auth,
        };
        self.call_json(Method::PUT, &key_path(key, "/policy"), Some(&body))
            .await
    }

    /// `DELETE /v1/keys/{key}?force=…&after=…`: with `after` ("7d"), schedules the key's
    /// destruction; without, deletes it now (a key that still protects data needs `force`,
    /// which cryptoshreds it). Under dual authorization, a first approval only records it.
    pub async fn schedule_key_deletion(
        &self,
        key: &str,
        force: bool,
        after: Option<&str>,
    ) -> Result<KeyDeletion, ClientError> {
        let mut query = vec![];
        if force {
            query.push("force=true".to_string());
        }
        if let Some(after) = after {
            query.push(format!("after={}", encode_segment(after)));
        }
        let path = if query.is_empty() {
            key_path(key, "")
        } else {
            format!("{}?{}", key_path(key, ""), query.join("&"))
        };
        let (status, bytes) = self
            .call_json_status(Method::DELETE, &path, NO_BODY)
            .await?;
        Ok(if status == 202 {
            KeyDeletion::Approved(parse_json(&bytes)?)
        } else if after.is_some() {
            KeyDeletion::Scheduled(Box::new(parse_json(&bytes)?))
        } else {
            KeyDeletion::Deleted(parse_json(&bytes)?)
        })
    }

    /// `DELETE /v1/keys/{key}?dry_run=true&after=…`: the preview of a scheduled deletion.
    pub async fn preview_scheduled_deletion(
        &self,
        key: &str,
        after: &str,
    ) -> Result<Impact, ClientError> {
        let path = format!(
            "{}?dry_run=true&after={}",
            key_path(key, ""),
            encode_segment(after)
        );
        self.call_json(Method::DELETE, &path, NO_BODY).await
    }

    /// `POST /v1/keys/{key}/cancel_deletion`: cancels a scheduled deletion (access returns), or
    /// else a pending dual-authorization approval. The key as it is now.
    pub async fn cancel_key_deletion(&self, key: &str) -> Result<KeyInfo, ClientError> {
        self.call_json(Method::POST, &key_path(key, "/cancel_deletion"), NO_BODY)
            .await
    }
}

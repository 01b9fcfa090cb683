//! Named, expiring tokens, key policies and scheduled deletion.

use serde_json::{json, Value};

use super::paths::key_path;
use super::{Client, ClientError, Method, NO_BODY};
use crate::api::KeyPolicyInfo;

impl Client {
    /// `POST /v1/tokens` with a name and a time to live (e.g. "30d").
    pub async fn create_named_token(
        &self,
        role: &str,
        databases: &[String],
        name: Option<&str>,
        ttl: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "role": role });
        if !databases.is_empty() {
            body["databases"] = json!(databases);
        }
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        if let Some(ttl) = ttl {
            body["ttl"] = json!(ttl);
        }
        self.call_value(Method::POST, "/v1/tokens", Some(&body))
            .await
    }

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
        let mut body = json!({});
        if let Some(every) = rotate_every {
            body["rotate_every"] = json!(every);
        }
        if let Some(dual) = dual_auth {
            body["dual_auth"] = json!(dual);
        }
        self.call_json(Method::PUT, &key_path(key, "/policy"), Some(&body))
            .await
    }

    /// `DELETE /v1/keys/{key}?force=…&after=…`: with `after` ("7d"), schedules the key's
    /// destruction (the answer is the key); without, shreds it now (the answer is the receipt).
    /// Under dual authorization, a first approval answers 202 with `deletion_authorized`.
    pub async fn schedule_key_deletion(
        &self,
        key: &str,
        force: bool,
        after: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut query = vec![];
        if force {
            query.push("force=true".to_string());
        }
        if let Some(after) = after {
            query.push(format!("after={}", super::paths::encode_segment(after)));
        }
        let path = if query.is_empty() {
            key_path(key, "")
        } else {
            format!("{}?{}", key_path(key, ""), query.join("&"))
        };
        self.call_value(Method::DELETE, &path, NO_BODY).await
    }

    /// `DELETE /v1/keys/{key}?dry_run=true&after=…`: the preview of a scheduled deletion.
    pub async fn preview_scheduled_deletion(
        &self,
        key: &str,
        after: &str,
    ) -> Result<Value, ClientError> {
        let path = format!(
            "{}?dry_run=true&after={}",
            key_path(key, ""),
            super::paths::encode_segment(after)
        );
        self.call_value(Method::DELETE, &path, NO_BODY).await
    }

    /// `POST /v1/keys/{key}/cancel_deletion`: cancels a scheduled deletion (access returns), or
    /// else a pending dual-authorization approval.
    pub async fn cancel_key_deletion(&self, key: &str) -> Result<Value, ClientError> {
        self.call_value(Method::POST, &key_path(key, "/cancel_deletion"), NO_BODY)
            .await
    }
}

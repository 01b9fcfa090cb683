//! The audit part: the activity log and the instance identity every event's target is named
//! by. Other parts log through [`Activity::record`] (outcome taken from a result) or
//! [`Activity::append`] (outcome given); the facade resolves a free-form reference to a CRN
//! first, since that needs the catalog.

use uuid::Uuid;

use super::{Action, AuditLog, Principal, ServiceError};

/// The activity log and the CRNs of this instance.
pub(crate) struct Activity {
    log: AuditLog,
    instance_name: String,
    instance_id: Uuid,
}

impl Activity {
    pub(crate) fn new(log: AuditLog, instance_name: String, instance_id: Uuid) -> Self {
        Self {
            log,
            instance_name,
            instance_id,
        }
    }

    /// The log itself (queries, verification, health).
    pub(crate) fn log(&self) -> &AuditLog {
        &self.log
    }

    /// `crn:v1:envault:local:a/<instance>:<instance-id>:<kind>:<id>`.
    pub(crate) fn crn(&self, kind: &str, id: &Uuid) -> String {
        format!("{}{kind}:{id}", self.own_prefix())
    }

    /// [`Activity::crn`] for resources whose ids are not UUIDs (tokens, authorizations).
    pub(crate) fn crn_named(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.own_prefix())
    }

    /// `crn:v1:envault:local:a/<instance>:<instance-id>:`, what every CRN of this instance
    /// starts with.
    pub(crate) fn own_prefix(&self) -> String {
        format!(
            "crn:v1:envault:local:a/{}:{}:",
            self.instance_name, self.instance_id
        )
    }

    /// The target of an event that names no resource of this instance (`…:<instance-id>::`).
    pub(crate) fn instance_crn(&self) -> String {
        format!("{}:", self.own_prefix())
    }

    /// Appends an event on `target` (a CRN). `reference`, when the request named something
    /// that resolved to no resource, is kept in the details.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append(
        &self,
        who: &Principal,
        action: Action,
        target: &str,
        reference: Option<String>,
        outcome: &str,
        reason: Option<String>,
        details: Option<serde_json::Value>,
    ) -> std::io::Result<String> {
        let details = match reference {
            None => details,
            Some(reference) => Some(match details {
                Some(serde_json::Value::Object(mut map)) => {
                    map.insert("reference".into(), reference.into());
                    serde_json::Value::Object(map)
                }
                None => serde_json::json!({ "reference": reference }),
                Some(other) => serde_json::json!({ "reference": reference, "details": other }),
            }),
        };
        self.log
            .append(who, action.as_str(), target, outcome, reason, details)
    }

    /// Appends the outcome of `result` and passes it through. A success whose event cannot
    /// be written is reported as a storage failure: the log must never miss an action that
    /// was acknowledged.
    pub(crate) fn record<T>(
        &self,
        who: &Principal,
        action: Action,
        (target, reference): (String, Option<String>),
        result: Result<T, ServiceError>,
        details: Option<serde_json::Value>,
    ) -> Result<T, ServiceError> {
        let (outcome, reason) = match &result {
            Ok(_) => ("success", None),
            Err(err) if err.is_denial() => ("denied", Some(err.code().to_string())),
            Err(err) => ("failure", Some(err.code().to_string())),
        };
        let appended = self.append(who, action, &target, reference, outcome, reason, details);
        if let Err(err) = appended {
            tracing::error!(error = %err, action = action.as_str(), "cannot append to the activity log");
            return Err(ServiceError::AuditLog(err.to_string()));
        }
        result
    }
}

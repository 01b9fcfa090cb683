//! [`SecretString`]: the type of every wire field that carries a secret.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A string that carries a secret: a plaintext or DEK in base64, a token, imported key
/// material, a record value. Its bytes are zeroized on drop. It has no `Debug`, `Display` or
/// `Clone`, so it cannot end up in a log line or an error message by accident, nor be copied
/// into memory that is not wiped; [`SecretString::expose_secret`] is the only way to read it.
///
/// It (de)serializes as a plain JSON string. Wire types holding one print `"REDACTED"` in its
/// place in their own `Debug` output.
pub struct SecretString(String);

impl SecretString {
    /// Takes ownership of `value` (its buffer is the one zeroized later).
    pub fn new(value: String) -> Self {
        SecretString(value)
    }

    /// The standard base64 of `bytes` (how binary secrets travel), built directly in the
    /// buffer that is zeroized on drop.
    pub fn base64_of(bytes: &[u8]) -> Self {
        // `encode` sizes the buffer exactly once, so no reallocation leaves a copy behind.
        SecretString(BASE64.encode(bytes))
    }

    /// The secret text. Callers must not copy it anywhere that outlives this value unzeroized.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Decodes the standard base64 this string holds into memory that zeroizes on drop.
    pub fn decode_base64(&self) -> Result<Zeroizing<Vec<u8>>, base64::DecodeError> {
        BASE64.decode(&self.0).map(Zeroizing::new)
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString(value)
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretString {}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString)
    }
}

/// What `Debug` of a wire type prints for a secret field.
pub(crate) struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("REDACTED")
    }
}

/// `Some(REDACTED)` / `None` for an optional secret field in `Debug` output.
pub(crate) fn redacted<T>(field: &Option<T>) -> Option<Redacted> {
    field.as_ref().map(|_| Redacted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_a_plain_json_string() {
        let secret: SecretString = serde_json::from_str(r#""c2VjcmV0""#).unwrap();
        assert_eq!(secret.expose_secret(), "c2VjcmV0");
        assert_eq!(serde_json::to_string(&secret).unwrap(), r#""c2VjcmV0""#);
        assert_eq!(&secret.decode_base64().unwrap()[..], b"secret");
        assert_eq!(
            SecretString::base64_of(b"secret").expose_secret(),
            "c2VjcmV0"
        );
    }

    /// Every wire type that carries a secret prints `REDACTED` in its place.
    #[test]
    fn wire_types_redact_their_secrets() {
        use crate::api::{
            CreateKeyRequest, NewToken, RecordBatchOp, RecordBatchResult, UnwrapResponse,
            WrapRequest, WrapResponse,
        };
        let secret = "c2VjcmV0LXZhbHVl"; // base64 of "secret-value"
        let answers = [
            format!(
                "{:?}",
                serde_json::from_str::<NewToken>(&format!(
                    r#"{{"id":"t1","token":"{secret}","role":"app","databases":[]}}"#
                ))
                .unwrap()
            ),
            format!(
                "{:?}",
                serde_json::from_str::<WrapResponse>(&format!(
                    r#"{{"ciphertext":"c","key_version":1,"plaintext":"{secret}"}}"#
                ))
                .unwrap()
            ),
            format!(
                "{:?}",
                serde_json::from_str::<UnwrapResponse>(&format!(r#"{{"plaintext":"{secret}"}}"#))
                    .unwrap()
            ),
            format!(
                "{:?}",
                serde_json::from_str::<RecordBatchResult>(&format!(
                    r#"{{"status":200,"value":"{secret}"}}"#
                ))
                .unwrap()
            ),
            format!("{:?}", RecordBatchOp::put("k", b"secret-value")),
            format!(
                "{:?}",
                CreateKeyRequest {
                    name: "k".into(),
                    payload: Some(SecretString::new(secret.into())),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                WrapRequest {
                    plaintext: Some(SecretString::new(secret.into())),
                    aad: None,
                }
            ),
        ];
        for shown in answers {
            assert!(shown.contains("REDACTED"), "{shown}");
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn bad_base64_is_an_error() {
        assert!(SecretString::new("not base64!".into())
            .decode_base64()
            .is_err());
    }
}

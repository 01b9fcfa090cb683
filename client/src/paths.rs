//! Request paths: every `{key}`, `{db}`, `{rec}` and query value is percent-encoded here, so
//! a record key such as `a/b c` stays one path segment.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything outside RFC 3986's unreserved set (`A-Z a-z 0-9 - . _ ~`) is percent-encoded, so a
/// record key such as `a/b c` stays one path segment (`a%2Fb%20c`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment (or query value): everything but unreserved characters.
/// A segment made only of dots is encoded too, so `.` and `..` can never be read as
/// relative-path steps by anything between us and the daemon.
pub fn encode_segment(segment: &str) -> String {
    if !segment.is_empty() && segment.bytes().all(|b| b == b'.') {
        return "%2E".repeat(segment.len());
    }
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Builds `?a=x&b=y` from the pairs whose value is present (empty string when none are).
pub(super) fn query_string(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name}={}", encode_segment(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

pub(super) fn key_path(key: &str, suffix: &str) -> String {
    format!("/v1/keys/{}{suffix}", encode_segment(key))
}

pub(super) fn db_path(db: &str, suffix: &str) -> String {
    format!("/v1/databases/{}{suffix}", encode_segment(db))
}

pub(super) fn record_path(db: &str, rec: &str) -> String {
    format!("{}/{}", db_path(db, "/records"), encode_segment(rec))
}

pub(super) fn backup_path(id: &str, suffix: &str) -> String {
    format!("/v1/backups/{}{suffix}", encode_segment(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_only_unreserved_characters() {
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(encode_segment("%?#&=+"), "%25%3F%23%26%3D%2B");
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert_eq!(encode_segment(".."), "%2E%2E");
        assert_eq!(encode_segment("."), "%2E");
        assert_eq!(encode_segment("a..b"), "a..b");
    }

    #[test]
    fn paths_encode_each_segment() {
        assert_eq!(
            record_path("my db", "a/b c"),
            "/v1/databases/my%20db/records/a%2Fb%20c"
        );
        assert_eq!(
            key_path("crn:v1:envault:local:a/x:1:key:2", "/wrap"),
            "/v1/keys/crn%3Av1%3Aenvault%3Alocal%3Aa%2Fx%3A1%3Akey%3A2/wrap"
        );
        assert_eq!(backup_path("b1", "/restore"), "/v1/backups/b1/restore");
    }

    #[test]
    fn query_skips_absent_values() {
        assert_eq!(query_string(&[("prefix", None), ("limit", None)]), "");
        assert_eq!(
            query_string(&[
                ("prefix", Some("a b&")),
                ("after", None),
                ("limit", Some("5"))
            ]),
            "?prefix=a%20b%26&limit=5"
        );
    }
}

//! Connection strings without their passwords, for logs and error messages.

const MASK: &str = "***";

/// `url` with any password replaced by `***`: the `user:password@` of a URL and `password=`
/// settings (URL query parameters and `key=value` connection strings, quoted or not).
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    // postgres://user:password@host/db: the user info ends at the authority's last '@'.
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let rest = &out[rest_start..];
        // Over-masks rather than under-masks: a raw '@' or '/' inside the password (it should
        // be percent-encoded) still leaves nothing of it.
        if let Some(at) = rest.rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, MASK);
            }
        }
    }
    redact_password_settings(&out)
}

/// Masks the value of every `password=` (any case, spaces around `=` allowed).
fn redact_password_settings(text: &str) -> String {
    const NAME: &str = "password";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(found) = lower[pos..].find(NAME) {
        let name_end = pos + found + NAME.len();
        let after_name = &text[name_end..];
        let spaces = after_name.len() - after_name.trim_start().len();
        if !after_name[spaces..].starts_with('=') {
            out.push_str(&text[pos..name_end]);
            pos = name_end;
            continue;
        }
        let eq = name_end + spaces + 1;
        let value_start = eq + (text[eq..].len() - text[eq..].trim_start().len());
        let value_end = value_end(text, value_start);
        out.push_str(&text[pos..value_start]);
        out.push_str(MASK);
        pos = value_end;
    }
    out.push_str(&text[pos..]);
    out
}

/// End of a setting's value: a quoted string ('...' with \' escapes) or up to whitespace or
/// '&' (URL query parameters).
fn value_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    if bytes.get(start) == Some(&b'\'') {
        let mut i = start + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'\'' => return i + 1,
                _ => i += 1,
            }
        }
        return bytes.len();
    }
    text[start..]
        .find(|c: char| c.is_whitespace() || c == '&')
        .map_or(text.len(), |n| start + n)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_masked_in_every_form() {
        let cases = [
            (
                "postgres://envault:s3cret@127.0.0.1:5432/envault",
                "postgres://envault:***@127.0.0.1:5432/envault",
            ),
            (
                "postgresql://u:p%40ss@db.example/x?sslmode=disable",
                "postgresql://u:***@db.example/x?sslmode=disable",
            ),
            (
                "postgres://u@h/db?password=s3cret&application_name=a",
                "postgres://u@h/db?password=***&application_name=a",
            ),
            (
                "host=/tmp dbname=envault user=u password=s3cret port=5432",
                "host=/tmp dbname=envault user=u password=*** port=5432",
            ),
            (
                "host=h PASSWORD = 'se cr\\'et' user=u",
                "host=h PASSWORD = *** user=u",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("host=h user=u", "host=h user=u"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
        // A password with an unencoded '@' or '/' is still masked whole.
        let weird = redact("postgres://u:a@b/c@host/db");
        assert!(!weird.contains("a@b/c"), "{weird}");
        assert!(weird.ends_with("@host/db"), "{weird}");
    }
}

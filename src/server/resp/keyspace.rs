//! Commands over a database's keys: SCAN (with MATCH and COUNT), DBSIZE, and the key counts
//! of `INFO keyspace`.
//!
//! SCAN's cursor carries the last key returned, so it works on any connection of a pool and
//! needs no state in the daemon: clients parse cursors as integers, so the key is written as
//! the decimal number of the bytes `0x01 ‖ key` (big-endian); `0` starts and ends a scan.

use super::codec::{Args, Reply};
use super::records::error_message;
use super::session::Session;
use crate::api::RecordListQuery;
use crate::service::ServiceError;

/// Keys listed per page when counting.
const PAGE: usize = 1000;
/// Longest cursor accepted: the decimal form of a 1 KiB key and then some.
const MAX_CURSOR_DIGITS: usize = 4096;

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`.
pub async fn scan(session: &Session, args: &Args) -> Reply {
    let args = args.as_slice();
    if args.len() < 2 || !args.len().is_multiple_of(2) {
        return Reply::error("ERR wrong number of arguments for 'scan' command");
    }
    let after = match decode_cursor(&args[1]) {
        Ok(after) => after,
        Err(reply) => return reply,
    };
    let mut pattern: Option<&[u8]> = None;
    let mut count = 10usize;
    let mut only_strings = true;
    for pair in args[2..].chunks(2) {
        match pair[0].to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(&pair[1]),
            b"COUNT" => match std::str::from_utf8(&pair[1])
                .ok()
                .and_then(|n| n.parse().ok())
            {
                Some(n) if n >= 1 => count = n,
                _ => return Reply::error("ERR value is not an integer or out of range"),
            },
            b"TYPE" => only_strings = pair[1].eq_ignore_ascii_case(b"string"),
            _ => return Reply::error("ERR syntax error"),
        }
    }
    let auth = match session.authorized() {
        Ok(auth) => auth,
        Err(reply) => return reply,
    };
    // The pattern's literal start narrows the listing; the rest is matched here.
    let prefix = pattern.map(literal_prefix).unwrap_or_default();
    let query = RecordListQuery {
        prefix: (!prefix.is_empty()).then(|| String::from_utf8_lossy(&prefix).into_owned()),
        after,
        limit: Some(count.min(PAGE)),
    };
    let page = match session
        .state
        .vault
        .list_records(&auth.principal, &auth.db_ref, query)
        .await
    {
        Ok(page) => page,
        Err(err) => return Reply::error(error_message(&err)),
    };
    let keys = page
        .keys
        .into_iter()
        .filter(|key| only_strings && pattern.is_none_or(|p| glob_match(p, key.as_bytes())))
        .map(Reply::Text)
        .collect();
    let cursor = page
        .next
        .map_or_else(|| "0".to_string(), |k| encode_cursor(k.as_bytes()));
    Reply::Array(vec![Reply::Text(cursor), Reply::Array(keys)])
}

/// `DBSIZE`.
pub async fn dbsize(session: &Session) -> Reply {
    let auth = match session.authorized() {
        Ok(auth) => auth,
        Err(reply) => return reply,
    };
    match count_keys(session, &auth.db_ref).await {
        Ok(n) => Reply::Int(n as i64),
        Err(err) => Reply::error(error_message(&err)),
    }
}

/// How many records a database holds (listed page by page).
pub async fn count_keys(session: &Session, db: &str) -> Result<usize, ServiceError> {
    let Some(auth) = &session.auth else {
        return Err(ServiceError::Unauthenticated);
    };
    let mut total = 0;
    let mut after = None;
    loop {
        let query = RecordListQuery {
            prefix: None,
            after,
            limit: Some(PAGE),
        };
        let page = session
            .state
            .vault
            .list_records(&auth.principal, db, query)
            .await?;
        total += page.keys.len();
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(total),
        }
    }
}

/// The key bytes as a decimal cursor.
pub fn encode_cursor(key: &[u8]) -> String {
    // Base 10^9 limbs, least significant first.
    let mut limbs: Vec<u32> = vec![0];
    for &byte in std::iter::once(&1u8).chain(key) {
        let mut carry = u64::from(byte);
        for limb in &mut limbs {
            let v = u64::from(*limb) * 256 + carry;
            *limb = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    let mut text = String::with_capacity(limbs.len() * 9);
    let mut iter = limbs.iter().rev();
    if let Some(top) = iter.next() {
        text.push_str(&top.to_string());
    }
    for limb in iter {
        text.push_str(&format!("{limb:09}"));
    }
    text
}

/// The key a cursor carries; `None` for `0`.
pub fn decode_cursor(cursor: &[u8]) -> Result<Option<String>, Reply> {
    let invalid = || Reply::error("ERR invalid cursor");
    if cursor.is_empty()
        || cursor.len() > MAX_CURSOR_DIGITS
        || !cursor.iter().all(u8::is_ascii_digit)
    {
        return Err(invalid());
    }
    let mut bytes: Vec<u8> = Vec::new(); // base 256, least significant first
    for &digit in cursor {
        let mut carry = u32::from(digit - b'0');
        for byte in &mut bytes {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    if bytes.is_empty() {
        return Ok(None);
    }
    bytes.reverse();
    match bytes.split_first() {
        Some((1, key)) => String::from_utf8(key.to_vec())
            .map(Some)
            .map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

/// The part of a glob pattern before its first special character.
fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut prefix = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pattern.len() => {
                prefix.push(pattern[i + 1]);
                i += 2;
            }
            b'\\' => break,
            byte => {
                prefix.push(byte);
                i += 1;
            }
        }
    }
    prefix
}

/// One element of a glob pattern.
enum Token {
    /// `*`: any run of bytes.
    Star,
    /// Exactly one byte matching this (`?`, a class, a literal).
    One(Box<dyn Fn(u8) -> bool>),
}

fn tokenize(pattern: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' => {
                if !matches!(tokens.last(), Some(Token::Star)) {
                    tokens.push(Token::Star);
                }
                i += 1;
            }
            b'?' => {
                tokens.push(Token::One(Box::new(|_| true)));
                i += 1;
            }
            b'[' => {
                i += 1;
                let negate = pattern.get(i) == Some(&b'^');
                if negate {
                    i += 1;
                }
                let mut ranges: Vec<(u8, u8)> = Vec::new();
                let mut closed = false;
                while i < pattern.len() {
                    match &pattern[i..] {
                        [b']', ..] => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        [b'\\', escaped, ..] => {
                            ranges.push((*escaped, *escaped));
                            i += 2;
                        }
                        [lo, b'-', hi, ..] if *hi != b']' => {
                            ranges.push(((*lo).min(*hi), (*lo).max(*hi)));
                            i += 3;
                        }
                        [one, ..] => {
                            ranges.push((*one, *one));
                            i += 1;
                        }
                        [] => break,
                    }
                }
                if !closed {
                    // An unterminated class matches nothing.
                    tokens.push(Token::One(Box::new(|_| false)));
                    continue;
                }
                tokens.push(Token::One(Box::new(move |c| {
                    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c)) != negate
                })));
            }
            b'\\' if i + 1 < pattern.len() => {
                let literal = pattern[i + 1];
                tokens.push(Token::One(Box::new(move |c| c == literal)));
                i += 2;
            }
            literal => {
                tokens.push(Token::One(Box::new(move |c| c == literal)));
                i += 1;
            }
        }
    }
    tokens
}

/// Redis's glob: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\` escapes. Linear backtracking to the
/// last `*`, so no pattern can make it exponential.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let tokens = tokenize(pattern);
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::Star) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Token::One(matches)) if matches(text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|token| matches!(token, Token::Star))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn globs_match_like_redis() {
        assert!(glob_match(b"user:*", b"user:42"));
        assert!(!glob_match(b"user:*", b"users"));
        assert!(glob_match(b"h?llo", b"hallo"));
        assert!(glob_match(b"h[ae]llo", b"hello"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-b]llo", b"hbllo"));
        assert!(glob_match(b"a\\*b", b"a*b"));
        assert!(!glob_match(b"a\\*b", b"axb"));
        assert_eq!(literal_prefix(b"user:\\*x*"), b"user:*x".to_vec());
    }

    proptest! {
        #[test]
        fn cursors_carry_any_key(key in "[^\u{0}]{0,200}") {
            let cursor = encode_cursor(key.as_bytes());
            prop_assert!(cursor.bytes().all(|b| b.is_ascii_digit()));
            prop_assert_ne!(&cursor, "0");
            let back = decode_cursor(cursor.as_bytes()).ok().flatten();
            prop_assert_eq!(back.as_deref(), Some(key.as_str()));
        }
    }

    #[test]
    fn zero_starts_and_garbage_is_refused() {
        assert!(matches!(decode_cursor(b"0"), Ok(None)));
        assert!(decode_cursor(b"12x").is_err());
        assert!(decode_cursor(b"2").is_err()); // no 0x01 marker
    }
}

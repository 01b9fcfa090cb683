//! Settings written with units: durations, sizes, file modes, `s3://` targets.

use std::time::Duration;

/// Parses "100ms", "30s", "5m", "12h", "9d" (or a bare number of seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Parses "16MiB", "512KiB", "1GiB" or a bare byte count.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Parses an octal file mode ("0660", "0o600"), at most 0o777.
pub fn parse_mode(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
}

/// Splits an `s3://BUCKET/PREFIX` backup target into bucket and prefix (without slashes at
/// either end), or says what is wrong with it.
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url:?} is not an s3://BUCKET/PREFIX URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return Err(format!(
            "{url:?}: bucket names are 3-63 lowercase letters, digits, '-' or '.'"
        ));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..")
        || prefix.contains("//")
        || prefix.chars().any(|c| c.is_control())
    {
        return Err(format!("{url:?}: invalid prefix"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// Shortest rotation period of a key policy, in days.
pub const MIN_ROTATE_DAYS: u32 = 1;
/// Longest rotation period of a key policy, in days (about seven years, as AWS KMS allows).
pub const MAX_ROTATE_DAYS: u32 = 2560;

/// Parses a key rotation period: "off" (or empty) for none, or whole days "90d" within 1–2560.
pub fn parse_rotate_every(text: &str) -> Result<Option<u32>, String> {
    let text = text.trim();
    if text.is_empty() || text == "off" {
        return Ok(None);
    }
    text.strip_suffix('d')
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (MIN_ROTATE_DAYS..=MAX_ROTATE_DAYS).contains(n))
        .map(Some)
        .ok_or_else(|| {
            format!("invalid rotation period {text:?}: use \"off\" or whole days from 1d to 2560d, such as \"90d\"")
        })
}

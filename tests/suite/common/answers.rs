//! Reading raw HTTP answers and the API's error bodies.

use super::*;

/// Status and body of a raw HTTP/1.1 answer (chunked bodies decoded).
pub fn parse_response(bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..split]).ok()?;
    let body = &bytes[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
            chunked = true;
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(length) = length {
        body.get(..length)?.to_vec()
    } else {
        body.to_vec()
    };
    Some((status, body))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// The `{"error": {"code", "message"}}` body of an error answer: asserts its shape and returns
/// the code.
pub fn error_code(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let error = value
        .get("error")
        .and_then(|e| e.as_object())
        .unwrap_or_else(|| panic!("no error object in {value}"));
    let message = error
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_else(|| panic!("no error.message in {value}"));
    assert!(!message.is_empty(), "empty error.message in {value}");
    error
        .get("code")
        .and_then(|c| c.as_str())
        .unwrap_or_else(|| panic!("no error.code in {value}"))
        .to_string()
}

/// Asserts a raw answer is an API error with this status and code.
#[track_caller]
pub fn assert_error_answer(answer: &(u16, Vec<u8>), status: u16, code: &str) {
    assert_eq!(
        answer.0,
        status,
        "status of answer {:?}",
        String::from_utf8_lossy(&answer.1)
    );
    assert_eq!(error_code(&answer.1), code, "error code");
}

/// Asserts a typed call failed with this API status and code.
#[track_caller]
pub fn assert_api_error<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    status: u16,
    code: &str,
) {
    match result {
        Ok(value) => panic!("expected {status} {code}, got success: {value:?}"),
        Err(ClientError::Api {
            status: got_status,
            code: got_code,
            message,
        }) => {
            assert_eq!(
                (got_status, got_code.as_str()),
                (status, code),
                "error: {message}"
            );
            assert!(!message.is_empty(), "empty error message");
        }
        Err(other) => panic!("expected {status} {code}, got {other:?}"),
    }
}

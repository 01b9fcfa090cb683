//! Assertions on the output of one `envault` CLI run, shared by the command-line suites.

use std::process::Output;

use serde_json::Value;

/// Asserts success; returns stdout as text.
#[track_caller]
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {}; stdout: {}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// Asserts success and parses stdout as JSON.
#[track_caller]
pub fn ok_json(output: &Output) -> Value {
    let text = ok(output);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {text}"))
}

/// Asserts the exit status of the code's class, nothing on stdout, and a last stderr line
/// `error: <message> (<code>)` with a message; returns stderr.
#[track_caller]
pub fn fails_with(output: &Output, code: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(super::cli_exit_status(code)),
        "expected failure ({code}); stdout: {}; stderr: {stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    let last = stderr.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("error: "), "stderr: {stderr}");
    assert!(last.ends_with(&format!("({code})")), "stderr: {stderr}");
    assert!(
        last.len() > "error: ".len() + code.len() + 3,
        "the message is not empty: {stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "stdout on failure: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

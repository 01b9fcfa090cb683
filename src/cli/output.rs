//! Human and JSON output: aligned tables, field lists, raw bytes. Every write goes through here so
//! that a closed stdout (`envault ls db | head`) is an error value, never a panic.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use super::CliError;

/// Writes `text` and a newline to stdout.
pub fn line(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(CliError::Output)
}

/// Writes bytes to stdout exactly as given (record values).
pub fn raw(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// A note for the operator on stderr (hints, secrets-shown-once warnings); never fails.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Pretty JSON on stdout: what `--json` prints.
pub fn json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Output(e.into()))?;
    line(&text)
}

/// One compact JSON document per line (followed audit events under `--json`).
pub fn json_line(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string(value).map_err(|e| CliError::Output(e.into()))?;
    line(&text)
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Appends a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The rendered lines, header first.
    pub fn render(&self) -> Vec<String> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let cells = self.rows.iter().filter_map(|r| r.get(c));
                cells.map(|cell| cell.chars().count()).max().unwrap_or(0)
            })
            .collect();
        self.rows
            .iter()
            .map(|row| {
                let mut text = String::new();
                for (c, cell) in row.iter().enumerate() {
                    if c + 1 == row.len() {
                        text.push_str(cell);
                    } else {
                        let pad = widths[c] - cell.chars().count();
                        text.push_str(cell);
                        text.push_str(&" ".repeat(pad + 2));
                    }
                }
                text.trim_end().to_string()
            })
            .collect()
    }

    /// Prints the table.
    pub fn print(&self) -> Result<(), CliError> {
        self.render().iter().try_for_each(|l| line(l))
    }
}

/// Prints `name: value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> Result<(), CliError> {
    let width = pairs
        .iter()
        .map(|(name, _)| name.len() + 1)
        .max()
        .unwrap_or(0);
    for (name, value) in pairs {
        line(&format!("{:<width$}  {value}", format!("{name}:")))?;
    }
    Ok(())
}

/// A typed answer as JSON, for the table helpers below (cells, lists, fields).
pub fn value(answer: &impl Serialize) -> Result<Value, CliError> {
    serde_json::to_value(answer).map_err(|e| CliError::Output(std::io::Error::other(e)))
}

/// A field of a JSON answer as a cell: strings as-is, arrays joined by commas, objects as
/// `k=v` pairs, absent or null as `-`.
pub fn cell(value: &Value, name: &str) -> String {
    value.get(name).map(show).unwrap_or_else(|| "-".into())
}

/// A JSON value shown for humans (see [`cell`]).
pub fn show(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(","),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// The list in an answer: the answer itself when it is an array, else its field `name`.
pub fn items<'a>(value: &'a Value, name: &str) -> &'a [Value] {
    match value {
        Value::Array(items) => items,
        other => other
            .get(name)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]),
    }
}

/// Every scalar field of an object, in the answer's order, for `show` verbs without a typed
/// answer.
pub fn object_fields(value: &Value) -> Vec<(&str, String)> {
    match value.as_object() {
        Some(map) => map.iter().map(|(k, v)| (k.as_str(), show(v))).collect(),
        None => vec![("value", show(value))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_aligns_columns() {
        let mut table = Table::new(&["ID", "NAME"]);
        table.row(vec!["1".into(), "alpha".into()]);
        table.row(vec!["12345".into(), "b".into()]);
        assert_eq!(
            table.render(),
            vec!["ID     NAME", "1      alpha", "12345  b"]
        );
    }

    #[test]
    fn cells_and_items() {
        let v = json!({"roles": ["Reader", "AuthorizationDelegator"], "n": 3, "x": null,
                       "who": {"token": "t1", "uid": 7}, "list": [{"a": 1}]});
        assert_eq!(cell(&v, "roles"), "Reader,AuthorizationDelegator");
        assert_eq!(cell(&v, "n"), "3");
        assert_eq!(cell(&v, "x"), "-");
        assert_eq!(cell(&v, "missing"), "-");
        assert_eq!(cell(&v, "who"), "token=t1 uid=7");
        assert_eq!(items(&v, "list").len(), 1);
        assert_eq!(items(&json!([1, 2]), "list").len(), 2);
        assert!(items(&v, "none").is_empty());
    }
}

//! Backend credentials (a PKCS#11 PIN, a transit token): read from a file named in the config or
//! from an environment variable, never from the config file itself, and held only in
//! zeroizing strings. Errors name the file or variable, never the value.

use std::path::Path;

use zeroize::Zeroizing;

use super::KeystoreError;

/// Reads a credential: `file` when set (trailing newline trimmed), else `$env_var`.
pub fn read_credential(
    what: &str,
    file: &Path,
    env_var: &str,
    setting: &str,
) -> Result<Zeroizing<String>, KeystoreError> {
    let value = if !file.as_os_str().is_empty() {
        let bytes = Zeroizing::new(std::fs::read(file).map_err(|e| {
            KeystoreError::Config(format!(
                "cannot read the {what} file {} ({setting}): {e}",
                file.display()
            ))
        })?);
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            KeystoreError::Config(format!(
                "the {what} file {} is not UTF-8 text",
                file.display()
            ))
        })?;
        Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_string())
    } else {
        match std::env::var(env_var) {
            Ok(value) => Zeroizing::new(value),
            Err(_) => {
                return Err(KeystoreError::Config(format!(
                    "no {what}: set {setting} to a file holding it, or the {env_var} environment variable"
                )))
            }
        }
    };
    if value.is_empty() {
        return Err(KeystoreError::Config(format!("the {what} is empty")));
    }
    Ok(value)
}

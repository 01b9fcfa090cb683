//! The check of `[keys]`: the rotation default of provider-managed keys and the settings of
//! secure import (import tokens, plaintext import).

use super::{positive, value, RawKeys};
use crate::config::{ConfigError, KeysConfig, MAX_IMPORT_TOKEN_USES};

impl RawKeys {
    pub(super) fn check(self) -> Result<KeysConfig, ConfigError> {
        let rotate_every_days = crate::config::units::parse_rotate_every(&self.rotate_every)
            .map_err(|_| {
                value(
                    "keys.rotate_every",
                    &self.rotate_every,
                    "\"off\" or whole days from 1d to 2560d, such as \"90d\"",
                )
            })?;
        let import_token_max_ttl = positive(
            "keys.import_token_max_ttl",
            &self.import_token_max_ttl,
            "a duration above 0 such as \"1d\"",
        )?;
        let import_token_ttl = positive(
            "keys.import_token_ttl",
            &self.import_token_ttl,
            "a duration above 0 such as \"10m\"",
        )?;
        if import_token_ttl > import_token_max_ttl {
            return Err(value(
                "keys.import_token_ttl",
                &self.import_token_ttl,
                "at most keys.import_token_max_ttl",
            ));
        }
        if !(1..=MAX_IMPORT_TOKEN_USES).contains(&self.import_token_max_uses) {
            return Err(value(
                "keys.import_token_max_uses",
                &self.import_token_max_uses.to_string(),
                "a number of uses from 1 to 1000",
            ));
        }
        if !(1..=self.import_token_max_uses).contains(&self.import_token_uses) {
            return Err(value(
                "keys.import_token_uses",
                &self.import_token_uses.to_string(),
                "a number of uses from 1 to keys.import_token_max_uses",
            ));
        }
        Ok(KeysConfig {
            rotate_every_days,
            import_token_ttl,
            import_token_max_ttl,
            import_token_uses: self.import_token_uses,
            import_token_max_uses: self.import_token_max_uses,
            plaintext_import: self.plaintext_import,
        })
    }
}

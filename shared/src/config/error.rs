//! What can be wrong with a config: each error names the file, the line and the key, and all
//! of a file's errors are reported together.

use std::fmt;

use serde::Serialize;

/// One thing wrong with a config file, e.g. `aie.toml:12: upstream[0].url: relative URL
/// without a base`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file as the user named it.
    pub file: String,
    /// The 1-based line the error is on, when it is on one.
    pub line: Option<usize>,
    /// The key's path, e.g. `upstream[0].url`; empty for a TOML syntax error.
    pub key: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut out = self.file.clone();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
        }
        if !self.key.is_empty() {
            out.push_str(&format!(": {}", self.key));
        }
        out.push_str(&format!(": {}", self.message));
        out
    }
}

/// Every error found in one config file, in line order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in line order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    /// One error a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// An `AIE_*` environment variable whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {reason}")]
pub struct OverrideError {
    /// The variable, e.g. `AIE_ZONE`.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// Why it cannot be used, and what would do.
    pub reason: String,
}

//! The only strings that ever become path components: task ids, agent names and approval
//! ids. Each is a safe file stem, checked once when it is made, so no later code has to ask
//! whether a raw string could climb out of the vault.

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::VaultError;

/// The longest id accepted: well under every filesystem's 255-byte name limit, `.md` included.
pub const MAX_ID_LEN: usize = 128;

/// Why `raw` is not a safe file stem, or `None` when it is one.
///
/// A safe stem is 1..=128 characters of `[A-Za-z0-9._-]`, contains no `..` and does not
/// start with `.`: so it can never be a path, a parent reference, or a hidden file that
/// listings skip.
fn unsafe_stem_reason(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return Some("is empty".to_owned());
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "contains {bad:?}; only A-Z a-z 0-9 . _ - are allowed"
        ));
    }
    if raw.len() > MAX_ID_LEN {
        return Some(format!("is longer than {MAX_ID_LEN} characters"));
    }
    if raw.contains("..") {
        return Some("contains `..`".to_owned());
    }
    if raw.starts_with('.') {
        return Some("starts with `.`".to_owned());
    }
    None
}

/// Checks `raw` as a stem of the given kind, naming the id in the error.
fn check_stem(kind: &'static str, raw: &str) -> Result<(), VaultError> {
    match unsafe_stem_reason(raw) {
        None => Ok(()),
        Some(reason) => Err(VaultError::InvalidId {
            kind,
            // Debug form, so a NUL or a newline in the refused id shows up visibly.
            id: format!("{raw:?}"),
            reason,
        }),
    }
}

/// Declares a validated safe-stem newtype; the three ids differ only in name and meaning.
macro_rules! safe_stem {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `raw`; the error names the refused id and why.
            pub fn new(raw: impl Into<String>) -> Result<Self, VaultError> {
                let raw = raw.into();
                check_stem($kind, &raw)?;
                Ok(Self(raw))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The markdown file this id names: `<id>.md`.
            pub fn file_name(&self) -> String {
                format!("{}.md", self.0)
            }
        }

        impl FromStr for $name {
            type Err = VaultError;
            fn from_str(raw: &str) -> Result<Self, VaultError> {
                Self::new(raw)
            }
        }

        impl TryFrom<String> for $name {
            type Error = VaultError;
            fn try_from(raw: String) -> Result<Self, VaultError> {
                Self::new(raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

safe_stem!(
    /// A task's id: its file stem in every state folder.
    TaskId,
    "task id"
);

safe_stem!(
    /// An agent's name: its folder under `In_Progress/` and `Logs/`.
    AgentName,
    "agent name"
);

safe_stem!(
    /// An approval request's id: its file stem under `Pending_Approval/`, `Approved/`, `Rejected/`.
    ApprovalId,
    "approval id"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain, dotted, dashed and maximal-length ids are accepted unchanged.
    #[test]
    fn vault_id_accepts_safe_stems() {
        for ok in [
            "t1",
            "email-2024.05.01_x",
            "A",
            "a.b",
            &"x".repeat(MAX_ID_LEN),
        ] {
            let id = TaskId::new(ok).expect(ok);
            assert_eq!(id.as_str(), ok);
            assert_eq!(id.file_name(), format!("{ok}.md"));
        }
    }

    /// Every kind of path trick is refused, and the error names the refused id.
    #[test]
    fn vault_id_refuses_path_tricks() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "/tmp/x",
            "a\0b",
            "a..b",
            ".hidden",
            "a b",
            "tâche",
            "a:b",
            long.as_str(),
        ] {
            let err = TaskId::new(bad).expect_err(bad).to_string();
            assert!(err.starts_with("invalid task id "), "{err}");
            assert!(
                err.contains(&format!("{bad:?}")),
                "{err} should name {bad:?}"
            );
        }
        assert!(AgentName::new("../cloud").is_err());
        assert!(ApprovalId::new("a/../../b").is_err());
    }

    /// Deserialising goes through the same check: a file cannot smuggle in a bad id.
    #[test]
    fn vault_id_deserialize_validates() {
        assert!(serde_json::from_str::<TaskId>("\"../etc\"").is_err());
        let id: TaskId = serde_json::from_str("\"t-1\"").expect("valid");
        assert_eq!(serde_json::to_string(&id).expect("serialize"), "\"t-1\"");
    }
}

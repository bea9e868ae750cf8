//! An approval request: a file binding one exact `execute` action (its tool and payload, and
//! the payload's SHA-256 over canonical JSON) to the human's decision.
//!
//! ```text
//! ---
//! approval_id: a-7f3c
//! domain: email
//! tool: email_send
//! payload: {to: alice@example.org, subject: "Re: invoice", body: "..."}
//! payload_sha256: 3b1f...   # hex SHA-256 of canonical_json(payload)
//! requested_by: cloud
//! requested_at: 2025-01-31T09:10:00Z
//! expires_at: 2025-02-01T09:10:00Z
//! task_id: email-42
//! ---
//! The human preview: what will be sent, to whom.
//! ```
//!
//! The canonical form is what the hash is taken over, so the same payload hashes the same
//! whatever order its keys were written in and however YAML laid it out.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use yaml_serde::Mapping;

use super::{
    AgentName, ApprovalId, Domain, TaskId, Vault, VaultError,
    frontmatter::{Fields, FieldsOut, join, split},
    layout::{APPROVED, REJECTED},
    task::now,
};

/// `value` as canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace,
/// strings escaped and numbers written as `serde_json` writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// Appends the canonical form of `value` to `out`.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            // Sorted here, whatever order serde_json's map keeps (it depends on a feature).
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(text) => write_string(text, out),
        // null, true, false and numbers: serde_json's compact form is already canonical.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Appends a JSON string literal, escaped as serde_json escapes it.
fn write_string(text: &str, out: &mut String) {
    out.push_str(&Value::String(text.to_owned()).to_string());
}

/// Lower-case hex SHA-256 of the payload's canonical JSON.
pub fn payload_sha256(payload: &Value) -> String {
    let digest = Sha256::digest(canonical_json(payload).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// An approval request's front matter.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalMeta {
    /// The request's id; always equal to its file stem.
    pub approval_id: ApprovalId,
    /// The domain it acts in.
    pub domain: Domain,
    /// The execute tool that will perform it.
    pub tool: String,
    /// The exact arguments that tool will get.
    pub payload: Value,
    /// Hex SHA-256 of `canonical_json(payload)`, fixed when the request was made.
    pub payload_sha256: String,
    /// The agent that drafted it.
    pub requested_by: AgentName,
    /// When it was drafted.
    pub requested_at: DateTime<Utc>,
    /// After this it may not run.
    pub expires_at: DateTime<Utc>,
    /// The task it serves, if any.
    pub task_id: Option<TaskId>,
    /// Every other key, in file order, written back unchanged.
    pub extra: Mapping,
}

/// An approval request: front matter and the human preview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRequest {
    /// The front matter.
    pub meta: ApprovalMeta,
    /// What the human reads before deciding (markdown).
    pub preview: String,
}

impl ApprovalMeta {
    /// Reads an approval request's front matter; the error names the field.
    fn from_fields(mut fields: Fields) -> Result<Self, String> {
        let approval_id = fields.required("approval_id")?;
        let domain = fields.required("domain")?;
        let tool: String = fields.required("tool")?;
        if !crate::tools::valid_tool_name(&tool) {
            return Err(format!("field `tool`: {tool:?} is not a tool name"));
        }
        Ok(Self {
            approval_id,
            domain,
            tool,
            payload: fields.required("payload")?,
            payload_sha256: fields.required("payload_sha256")?,
            requested_by: fields.required("requested_by")?,
            requested_at: fields.required_time("requested_at")?,
            expires_at: fields.required_time("expires_at")?,
            task_id: fields.optional("task_id")?,
            extra: fields.rest(),
        })
    }

    /// The front matter as a YAML mapping: known fields in a fixed order, then the extras.
    pub fn to_mapping(&self) -> Result<Mapping, String> {
        let mut out = FieldsOut::default();
        out.put("approval_id", &self.approval_id)?;
        out.put("domain", &self.domain)?;
        out.put("tool", &self.tool)?;
        out.put("payload", &self.payload)?;
        out.put("payload_sha256", &self.payload_sha256)?;
        out.put("requested_by", &self.requested_by)?;
        out.put_time("requested_at", Some(self.requested_at));
        out.put_time("expires_at", Some(self.expires_at));
        out.put_opt("task_id", self.task_id.as_ref())?;
        Ok(out.finish(&self.extra))
    }
}

/// The same mapping the file holds, so JSON answers and files never disagree.
impl Serialize for ApprovalMeta {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_mapping()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl ApprovalRequest {
    /// A new request drafted now, its payload hash computed; add a task and preview after.
    pub fn new(
        approval_id: ApprovalId,
        domain: Domain,
        tool: impl Into<String>,
        payload: Value,
        requested_by: AgentName,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            meta: ApprovalMeta {
                approval_id,
                domain,
                tool: tool.into(),
                payload_sha256: payload_sha256(&payload),
                payload,
                requested_by,
                requested_at: now(),
                expires_at,
                task_id: None,
                extra: Mapping::new(),
            },
            preview: String::new(),
        }
    }

    /// The same request, serving `task_id`.
    pub fn for_task(mut self, task_id: TaskId) -> Self {
        self.meta.task_id = Some(task_id);
        self
    }

    /// The same request with a human preview as its body.
    pub fn with_preview(mut self, preview: impl Into<String>) -> Self {
        self.preview = preview.into();
        self
    }

    /// Whether the payload still hashes to the recorded `payload_sha256`.
    pub fn hash_matches(&self) -> bool {
        payload_sha256(&self.meta.payload) == self.meta.payload_sha256
    }

    /// Parses an approval request file's text; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (yaml, body) = split(text)?;
        let meta = ApprovalMeta::from_fields(Fields::parse(yaml)?)?;
        Ok(Self {
            meta,
            preview: body.to_owned(),
        })
    }

    /// The file's text.
    pub fn render(&self) -> Result<String, String> {
        join(&self.meta.to_mapping()?, &self.preview)
    }
}

impl Vault {
    /// Every folder that holds approval requests: `Pending_Approval/<domain>/`, `Approved/`,
    /// `Rejected/`.
    pub fn approval_dirs(&self) -> Vec<PathBuf> {
        self.approval_folders()
            .into_iter()
            .map(|(_, dir)| dir)
            .collect()
    }

    /// The approval folders, each with the domain its name promises (pending ones only).
    pub(crate) fn approval_folders(&self) -> Vec<(Option<Domain>, PathBuf)> {
        let mut folders: Vec<_> = Domain::ALL
            .into_iter()
            .map(|d| (Some(d), self.pending_approval_dir(d)))
            .collect();
        folders.push((None, self.root.join(APPROVED)));
        folders.push((None, self.root.join(REJECTED)));
        folders
    }

    /// Writes a new request to `Pending_Approval/<domain>/<approval_id>.md`, never replacing
    /// one; returns its vault-relative path.
    pub fn write_approval_request(&self, request: &ApprovalRequest) -> Result<String, VaultError> {
        let id = &request.meta.approval_id;
        if let Some(existing) = self.approval_files(id).into_iter().next() {
            return Err(VaultError::AlreadyExists {
                path: self.rel(&existing),
            });
        }
        let dir = self.pending_approval_dir(request.meta.domain);
        self.make_dir(&dir).map_err(|e| self.io(&dir, e))?;
        let path = dir.join(id.file_name());
        let text = request.render().map_err(|reason| VaultError::Encode {
            path: self.rel(&path),
            reason,
        })?;
        self.write_new_file(&path, text.as_bytes())
            .map_err(|e| self.exists_or_io(&path, e))?;
        Ok(self.rel(&path))
    }

    /// Reads the approval request with this id, wherever it is; returns its path too.
    pub fn read_approval_request(
        &self,
        id: &ApprovalId,
    ) -> Result<(String, ApprovalRequest), VaultError> {
        let paths = self.approval_files(id);
        match paths.as_slice() {
            [path] => Ok((self.rel(path), self.read_approval_file(path)?)),
            [] => Err(VaultError::ApprovalNotFound { id: id.clone() }),
            _ => Err(VaultError::DuplicateApproval {
                id: id.clone(),
                paths: paths.iter().map(|p| self.rel(p)).collect(),
            }),
        }
    }

    /// Reads and parses one approval request file; errors name the file.
    pub(crate) fn read_approval_file(&self, path: &Path) -> Result<ApprovalRequest, VaultError> {
        let bytes = self.read_plain_file(path).map_err(|e| self.io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| VaultError::BadFrontMatter {
            path: self.rel(path),
            reason: "the file is not UTF-8 text".to_owned(),
        })?;
        ApprovalRequest::parse(&text).map_err(|reason| VaultError::BadFrontMatter {
            path: self.rel(path),
            reason,
        })
    }

    /// Every existing file named `<id>.md` in the approval folders.
    fn approval_files(&self, id: &ApprovalId) -> Vec<PathBuf> {
        self.approval_dirs()
            .into_iter()
            .map(|dir| dir.join(id.file_name()))
            .filter(|path| self.is_plain_file(path))
            .collect()
    }

    /// Maps a create-only write's error: an existing file is named as such.
    pub(crate) fn exists_or_io(&self, path: &Path, error: std::io::Error) -> VaultError {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            VaultError::AlreadyExists {
                path: self.rel(path),
            }
        } else {
            self.io(path, error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Key order and whitespace do not change the canonical form or the hash; the hash is a
    /// fixed known answer, so a change to the canonicalisation shows up here.
    #[test]
    fn vault_canonical_json_is_stable_across_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"d": [1, 2.5, "x"], "c": null}, "é": "ü\n"}"#)
                .expect("a");
        let b: Value =
            serde_json::from_str(r#"{"é":"ü\n","a":{"c":null,"d":[1,2.5,"x"]},"b":1}"#).expect("b");
        let expected = r#"{"a":{"c":null,"d":[1,2.5,"x"]},"b":1,"é":"ü\n"}"#;
        assert_eq!(canonical_json(&a), expected);
        assert_eq!(canonical_json(&b), expected);
        assert_eq!(payload_sha256(&a), payload_sha256(&b));
        // sha256 of the `expected` bytes, computed independently with sha256sum.
        assert_eq!(
            payload_sha256(&a),
            "f2e7b918acc668af34263955a0042c5e8d0ea8482a023b6e12d00b3cb8675e55"
        );
        assert_ne!(payload_sha256(&a), payload_sha256(&json!({"b": 2})));
    }

    /// A request written to YAML and read back still matches its hash: YAML's layout of the
    /// payload does not leak into the canonical form.
    #[test]
    fn vault_approval_round_trip_keeps_hash() {
        let payload = json!({
            "to": ["alice@example.org"],
            "subject": "Re: invoice #42",
            "body": "Dear Alice,\n\nyes: paid.\n",
            "amount": "120.50",
            "n": 3, "ratio": 0.25, "flag": true, "none": null,
            "tricky": "yes", "num_text": "007", "colon": "a: b",
        });
        let request = ApprovalRequest::new(
            ApprovalId::new("a1").expect("id"),
            Domain::Email,
            "email_send",
            payload.clone(),
            AgentName::new("cloud").expect("agent"),
            now(),
        )
        .for_task(TaskId::new("t1").expect("task"))
        .with_preview("To: alice\n\nDear Alice\n");
        let text = request.render().expect("render");
        let back = ApprovalRequest::parse(&text).expect("parse");
        assert_eq!(back, request);
        assert!(back.hash_matches());
        assert_eq!(back.meta.payload, payload);
    }

    /// An edited payload no longer matches its hash.
    #[test]
    fn vault_approval_tampered_payload_is_detected() {
        let mut request = ApprovalRequest::new(
            ApprovalId::new("a1").expect("id"),
            Domain::Payments,
            "payments_execute",
            json!({"amount": "10.00", "payee": "bob"}),
            AgentName::new("local").expect("agent"),
            now(),
        );
        assert!(request.hash_matches());
        request.meta.payload = json!({"amount": "1000.00", "payee": "bob"});
        assert!(!request.hash_matches());
    }
}

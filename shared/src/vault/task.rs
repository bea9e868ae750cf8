//! A task file: YAML front matter with the fields the agents need, any other keys a human
//! added (kept and written back), and a markdown body kept byte for byte.
//!
//! ```text
//! ---
//! id: email-42
//! domain: email
//! title: Reply to Alice about the invoice
//! created: 2025-01-31T09:00:00Z
//! owner: cloud                       # set while claimed
//! claimed_at: 2025-01-31T09:05:00Z   # set while claimed
//! lease_until: 2025-01-31T09:35:00Z  # set while claimed
//! source: {kind: maildir, message_id: "<...>"}
//! priority: high                     # anyone's own key: kept as is
//! ---
//! The body.
//! ```

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use yaml_serde::Mapping;

use super::{
    AgentName, Domain, TaskId,
    frontmatter::{Fields, FieldsOut, join, split},
};

/// A task's front matter.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMeta {
    /// The task's id; always equal to its file stem.
    pub id: TaskId,
    /// Its domain.
    pub domain: Domain,
    /// A one-line title.
    pub title: String,
    /// When the task was made.
    pub created: DateTime<Utc>,
    /// The agent that holds it (while claimed) or finished it (in `Done/`).
    pub owner: Option<AgentName>,
    /// When it was claimed.
    pub claimed_at: Option<DateTime<Utc>>,
    /// When the claim goes stale unless renewed.
    pub lease_until: Option<DateTime<Utc>>,
    /// When it was completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// The completing agent's note.
    pub note: Option<String>,
    /// Where the task came from (a mail's id, a chat): free-form, for the domain's server.
    pub source: Option<Mapping>,
    /// Every other key, in file order, written back unchanged.
    pub extra: Mapping,
}

/// A task: front matter and markdown body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    /// The front matter.
    pub meta: TaskMeta,
    /// The markdown after the front matter, byte for byte.
    pub body: String,
}

/// The current time as the vault stores it: UTC, whole seconds.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

impl TaskMeta {
    /// Reads a task's front matter from its YAML; the error names the field.
    fn from_fields(mut fields: Fields) -> Result<Self, String> {
        Ok(Self {
            id: fields.required("id")?,
            domain: fields.required("domain")?,
            title: fields.required("title")?,
            created: fields.required_time("created")?,
            owner: fields.optional("owner")?,
            claimed_at: fields.optional_time("claimed_at")?,
            lease_until: fields.optional_time("lease_until")?,
            completed_at: fields.optional_time("completed_at")?,
            note: fields.optional("note")?,
            source: fields.optional("source")?,
            extra: fields.rest(),
        })
    }

    /// The front matter as a YAML mapping: known fields in a fixed order, then the extras.
    pub fn to_mapping(&self) -> Result<Mapping, String> {
        let mut out = FieldsOut::default();
        out.put("id", &self.id)?;
        out.put("domain", &self.domain)?;
        out.put("title", &self.title)?;
        out.put_time("created", Some(self.created));
        out.put_opt("owner", self.owner.as_ref())?;
        out.put_time("claimed_at", self.claimed_at);
        out.put_time("lease_until", self.lease_until);
        out.put_time("completed_at", self.completed_at);
        out.put_opt("note", self.note.as_ref())?;
        out.put_opt("source", self.source.as_ref())?;
        Ok(out.finish(&self.extra))
    }

    /// Forgets a claim: owner and lease cleared.
    pub(crate) fn clear_claim(&mut self) {
        self.owner = None;
        self.claimed_at = None;
        self.lease_until = None;
    }
}

/// The same mapping the file holds, so JSON answers and files never disagree.
impl Serialize for TaskMeta {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_mapping()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl Task {
    /// A new, unclaimed task created now.
    pub fn new(
        id: TaskId,
        domain: Domain,
        title: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        Self {
            meta: TaskMeta {
                id,
                domain,
                title: title.into(),
                created: now(),
                owner: None,
                claimed_at: None,
                lease_until: None,
                completed_at: None,
                note: None,
                source: None,
                extra: Mapping::new(),
            },
            body: body.into(),
        }
    }

    /// Parses a task file's text; the error says what is wrong (the caller adds the file).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (yaml, body) = split(text)?;
        let meta = TaskMeta::from_fields(Fields::parse(yaml)?)?;
        Ok(Self {
            meta,
            body: body.to_owned(),
        })
    }

    /// The file's text.
    pub fn render(&self) -> Result<String, String> {
        join(&self.meta.to_mapping()?, &self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAND_WRITTEN: &str = "---\n\
        id: t1\n\
        priority: high\n\
        domain: email\n\
        tags: [invoice, alice]\n\
        title: Reply to Alice\n\
        created: 2025-01-31T09:00:00Z\n\
        nested:\n  a: 1\n  b: [x, y]\n\
        source:\n  kind: maildir\n  message_id: \"<m1@example.org>\"\n\
        ---\n\
        Body line one.\n\n- [ ] a checklist item\n";

    /// A hand-written task reads into typed fields and keeps its own keys in order.
    #[test]
    fn vault_task_parses_and_keeps_unknown_keys() {
        let task = Task::parse(HAND_WRITTEN).expect("parse");
        assert_eq!(task.meta.id.as_str(), "t1");
        assert_eq!(task.meta.domain, Domain::Email);
        assert_eq!(task.meta.title, "Reply to Alice");
        let keys: Vec<_> = task.meta.extra.keys().filter_map(|k| k.as_str()).collect();
        assert_eq!(keys, ["priority", "tags", "nested"]);
        assert_eq!(task.body, "Body line one.\n\n- [ ] a checklist item\n");
    }

    /// Render then parse gives the same task: unknown keys, source and body survive.
    #[test]
    fn vault_task_round_trip() {
        let task = Task::parse(HAND_WRITTEN).expect("parse");
        let again = Task::parse(&task.render().expect("render")).expect("reparse");
        assert_eq!(again, task);
    }

    /// Missing or wrong fields are named in the error.
    #[test]
    fn vault_task_errors_name_the_field() {
        let no_title = HAND_WRITTEN.replace("title: Reply to Alice\n", "");
        assert_eq!(
            Task::parse(&no_title).expect_err("must fail"),
            "missing field `title`"
        );
        let bad_domain = HAND_WRITTEN.replace("domain: email", "domain: fax");
        let err = Task::parse(&bad_domain).expect_err("must fail");
        assert!(
            err.starts_with("field `domain`: unknown variant `fax`"),
            "{err}"
        );
        let bad_id = HAND_WRITTEN.replace("id: t1", "id: ../t1");
        let err = Task::parse(&bad_id).expect_err("must fail");
        assert!(err.starts_with("field `id`: invalid task id"), "{err}");
    }
}

//! The policy engine: which effect class each tool has, which zone may see it, and which
//! client role may call it.
//!
//! Classes come from the operator, never from a server: the suite's own tools have the
//! contract's classes, `[policy.tools]` globs pin the rest, and a tool nobody classified is
//! `execute`. A server's annotations (`readOnlyHint` and the like) are not even read here.
//! The full rules, with the refusal texts, are in `specs/policy.md`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    str::FromStr,
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// What a tool can change, from least to most: the order is also "stricter than".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EffectClass {
    /// Changes nothing anywhere.
    Read,
    /// Changes only the vault.
    Draft,
    /// Changes the outside world: sends, posts, pays.
    Execute,
}

impl EffectClass {
    /// Every class, least to most effect.
    pub const ALL: [EffectClass; 3] = [EffectClass::Read, EffectClass::Draft, EffectClass::Execute];

    /// The class as written in config and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectClass::Read => "read",
            EffectClass::Draft => "draft",
            EffectClass::Execute => "execute",
        }
    }
}

impl fmt::Display for EffectClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EffectClass {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "read" => Ok(EffectClass::Read),
            "draft" => Ok(EffectClass::Draft),
            "execute" => Ok(EffectClass::Execute),
            other => Err(format!(
                "unknown effect class {other:?}: expected read, draft or execute"
            )),
        }
    }
}

/// Where a stack runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    /// Always on, away from the owner: reads and drafts only, holds no executing secrets.
    Cloud,
    /// The owner's machine: holds the secrets, takes the human's approvals, performs every
    /// final action.
    Local,
}

impl Zone {
    /// The zone as written in flags, config and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Zone::Cloud => "cloud",
            Zone::Local => "local",
        }
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Zone {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "cloud" => Ok(Zone::Cloud),
            "local" => Ok(Zone::Local),
            other => Err(format!("unknown zone {other:?}: expected cloud or local")),
        }
    }
}

/// The suite's own tools and their classes, as the contract's table pins them.
pub const SUITE_TOOLS: &[(&str, EffectClass)] = &[
    ("vault_list_tasks", EffectClass::Read),
    ("vault_read_task", EffectClass::Read),
    ("vault_claim_task", EffectClass::Draft),
    ("vault_release_task", EffectClass::Draft),
    ("vault_complete_task", EffectClass::Draft),
    ("vault_write_update", EffectClass::Draft),
    ("vault_sync", EffectClass::Draft),
    ("vault_status", EffectClass::Read),
    ("email_fetch", EffectClass::Draft),
    ("email_triage", EffectClass::Draft),
    ("email_draft_reply", EffectClass::Draft),
    ("email_send", EffectClass::Execute),
    ("social_draft_post", EffectClass::Draft),
    ("social_publish", EffectClass::Execute),
    ("whatsapp_list_messages", EffectClass::Read),
    ("whatsapp_draft_message", EffectClass::Draft),
    ("whatsapp_send", EffectClass::Execute),
    ("payments_draft", EffectClass::Draft),
    ("payments_execute", EffectClass::Execute),
    ("approvals_list", EffectClass::Read),
    ("approvals_status", EffectClass::Read),
];

/// The tool-name prefixes the suite's own servers use; an upstream may not take one.
pub const SUITE_PREFIXES: &[&str] = &[
    "vault",
    "email",
    "social",
    "whatsapp",
    "payments",
    "approvals",
];

/// The contract's class of one of the suite's own tools, `None` for any other tool.
pub fn suite_class(tool: &str) -> Option<EffectClass> {
    SUITE_TOOLS
        .iter()
        .find(|(name, _)| *name == tool)
        .map(|(_, class)| *class)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters (also none)
/// and `?` for exactly one; everything else matches itself, case-sensitively.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and where in `name` it currently ends: on a mismatch the star
    // swallows one more character and matching resumes after it. Linear in practice, and
    // never exponential, unlike naive recursion.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A pattern over tool names: `[A-Za-z0-9_-]` plus the wildcards `*` and `?`, 1..=64
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct ToolGlob(String);

impl ToolGlob {
    /// Validates `raw`; the error says what is wrong with it.
    pub fn new(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > 64 {
            return Err("a tool pattern is 1 to 64 characters".to_owned());
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*' | '?')))
        {
            return Err(format!(
                "{bad:?} cannot occur in a tool name; a pattern uses A-Z a-z 0-9 _ - and the wildcards * and ?"
            ));
        }
        Ok(ToolGlob(raw))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the pattern matches `tool`.
    pub fn matches(&self, tool: &str) -> bool {
        glob_matches(&self.0, tool)
    }

    /// True when the pattern has no wildcard, so it names exactly one tool.
    pub fn is_exact(&self) -> bool {
        !self.0.contains(['*', '?'])
    }

    /// How specific the pattern is: its count of literal (non-wildcard) characters.
    pub fn specificity(&self) -> usize {
        self.0.chars().filter(|c| !matches!(c, '*' | '?')).count()
    }
}

impl fmt::Display for ToolGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ToolGlob {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        ToolGlob::new(raw)
    }
}

impl From<ToolGlob> for String {
    fn from(glob: ToolGlob) -> String {
        glob.0
    }
}

/// What a gateway client's role may use: classes and tool patterns, both must allow a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// The effect classes the role may use.
    pub classes: BTreeSet<EffectClass>,
    /// The tools the role may use; a tool must match one pattern.
    pub tools: Vec<ToolGlob>,
}

impl Role {
    /// A role with `classes` over every tool.
    pub fn over_all_tools(classes: &[EffectClass]) -> Self {
        Role {
            classes: classes.iter().copied().collect(),
            tools: vec![ToolGlob("*".to_owned())],
        }
    }
}

/// The roles that exist without configuration; `[gateway.roles.<name>]` may redefine them.
///
/// `owner` may use everything (an execute call still needs the human's approval);
/// `drafter` reads and drafts; `reader` only reads.
pub fn builtin_roles() -> BTreeMap<String, Role> {
    use EffectClass::*;
    BTreeMap::from([
        (
            "owner".to_owned(),
            Role::over_all_tools(&[Read, Draft, Execute]),
        ),
        ("drafter".to_owned(), Role::over_all_tools(&[Read, Draft])),
        ("reader".to_owned(), Role::over_all_tools(&[Read])),
    ])
}

/// The role of the one client that `AIE_TOKEN` or a generated token stands for, when no
/// `[[gateway.clients]]` are configured.
pub const DEFAULT_CLIENT_ROLE: &str = "owner";

/// Whether a call may go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The call may reach its tool.
    Allow,
    /// The call is refused; the text says why, for the client and the audit log.
    Refuse(String),
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// The policy built from a config: tool classes, zone visibility and role checks.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `[policy.tools]` entries without wildcards, by tool name.
    exact: BTreeMap<String, EffectClass>,
    /// `[policy.tools]` entries with wildcards.
    globs: Vec<(ToolGlob, EffectClass)>,
    roles: BTreeMap<String, Role>,
}

impl Default for Policy {
    /// The policy of an empty config: the contract's classes and the built-in roles.
    fn default() -> Self {
        Policy {
            exact: BTreeMap::new(),
            globs: Vec::new(),
            roles: builtin_roles(),
        }
    }
}

impl Policy {
    /// The policy a validated config describes.
    pub fn new(config: &Config) -> Self {
        Self::from_parts(
            config.policy.tools.iter().map(|(g, c)| (g.clone(), *c)),
            config.gateway.roles.clone(),
        )
    }

    /// A policy from `[policy.tools]` entries and the full role table (built-ins included).
    pub fn from_parts(
        tools: impl IntoIterator<Item = (ToolGlob, EffectClass)>,
        roles: BTreeMap<String, Role>,
    ) -> Self {
        let mut policy = Policy {
            exact: BTreeMap::new(),
            globs: Vec::new(),
            roles,
        };
        for (glob, class) in tools {
            if glob.is_exact() {
                policy.exact.insert(glob.0, class);
            } else {
                policy.globs.push((glob, class));
            }
        }
        policy
    }

    /// The tool's class: an exact `[policy.tools]` name, else the most specific matching
    /// glob (ties: the stricter class), else the contract's class for a suite tool, else
    /// `execute`. A suite tool never ends up below its contract class.
    pub fn class_of(&self, tool: &str) -> EffectClass {
        let pinned = self.pinned(tool).map(|(_, class)| class);
        match (pinned, suite_class(tool)) {
            // Config validation already refuses lowering a suite tool; this keeps the
            // contract even for a policy built some other way.
            (Some(pinned), Some(contract)) => pinned.max(contract),
            (Some(pinned), None) => pinned,
            (None, Some(contract)) => contract,
            (None, None) => EffectClass::Execute,
        }
    }

    /// The `[policy.tools]` entry that decides `tool`'s class, if any: an exact name, else
    /// the most specific matching glob (ties: the stricter class).
    pub fn pinned(&self, tool: &str) -> Option<(&str, EffectClass)> {
        if let Some((name, class)) = self.exact.get_key_value(tool) {
            return Some((name.as_str(), *class));
        }
        self.globs
            .iter()
            .filter(|(glob, _)| glob.matches(tool))
            .max_by_key(|(glob, class)| (glob.specificity(), *class))
            .map(|(glob, class)| (glob.as_str(), *class))
    }

    /// Whether `tool` appears in the zone's `tools/list`: the cloud zone hides `execute`.
    pub fn visible_in(&self, zone: Zone, tool: &str) -> bool {
        zone == Zone::Local || self.class_of(tool) != EffectClass::Execute
    }

    /// The named role, if it exists.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Whether a client with `role` may call `tool` in `zone`; a refusal says why in words
    /// the caller can act on.
    pub fn decide(&self, zone: Zone, role: &str, tool: &str) -> Decision {
        let class = self.class_of(tool);
        if zone == Zone::Cloud && class == EffectClass::Execute {
            return Decision::Refuse(format!(
                "{tool} is an execute tool: it belongs to the local executive; the cloud zone only reads and drafts"
            ));
        }
        let Some(grant) = self.roles.get(role) else {
            return Decision::Refuse(format!(
                "role {role} is not defined: add [gateway.roles.{role}] to the config or give the client another role"
            ));
        };
        if !grant.classes.contains(&class) {
            let allowed: Vec<&str> = grant.classes.iter().map(|c| c.as_str()).collect();
            let allowed = if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            };
            return Decision::Refuse(format!(
                "role {role} may not use {class} tools, and {tool} is a {class} tool (the role's classes: {allowed})"
            ));
        }
        if !grant.tools.iter().any(|glob| glob.matches(tool)) {
            let patterns: Vec<&str> = grant.tools.iter().map(ToolGlob::as_str).collect();
            return Decision::Refuse(format!(
                "role {role} may not use {tool}: its tools are limited to {}",
                patterns.join(", ")
            ));
        }
        Decision::Allow
    }
}

/// The configured credentials that could perform an `execute` action, each named by its key
/// and why; `aie up --zone cloud` refuses to start while any is configured, because the cloud
/// zone must hold nothing that can send, post or pay.
pub fn cloud_forbidden_credentials(config: &Config) -> Vec<String> {
    config
        .executing_credentials()
        .into_iter()
        .map(|(key, why)| format!("{key}: {why}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(raw: &str) -> ToolGlob {
        ToolGlob::new(raw).unwrap()
    }

    fn policy(tools: &[(&str, EffectClass)]) -> Policy {
        Policy::from_parts(tools.iter().map(|(g, c)| (glob(g), *c)), builtin_roles())
    }

    /// `*` matches any run (also empty), `?` exactly one character, the rest itself.
    #[test]
    fn glob_matches_stars_and_question_marks() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("test_*", "test_simple_text", true),
            ("test_*", "test_", true),
            ("test_*", "tes", false),
            ("*_send", "email_send", true),
            ("*_send", "email_sender", false),
            ("a*b*c", "a__b__c", true),
            ("a*b*c", "a__c__b", false),
            ("a*b*c", "abcbc", true),
            ("vault_?ync", "vault_sync", true),
            ("vault_?ync", "vault_ync", false),
            ("email_send", "email_send", true),
            ("email_send", "Email_send", false),
            ("**x", "x", true),
            ("?", "", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(glob_matches(pattern, name), want, "{pattern:?} vs {name:?}");
        }
    }

    /// A pathological pattern finishes quickly: no exponential backtracking.
    #[test]
    fn glob_matching_is_not_exponential() {
        let name = "a".repeat(64);
        assert!(!glob_matches("*a*a*a*a*a*a*a*a*a*a*b", &name));
    }

    /// Patterns accept only tool-name characters and wildcards.
    #[test]
    fn tool_glob_refuses_characters_no_tool_name_has() {
        assert!(ToolGlob::new("vault_*").is_ok());
        assert!(ToolGlob::new("a-b?").is_ok());
        assert!(ToolGlob::new("").is_err());
        assert!(ToolGlob::new("vault.*").is_err());
        assert!(ToolGlob::new("x".repeat(65)).is_err());
        assert_eq!(glob("test_*").specificity(), 5);
        assert!(glob("email_send").is_exact());
    }

    /// With no config, the suite's tools have the contract's classes and anything else is
    /// execute.
    #[test]
    fn defaults_follow_the_contract_and_unknown_tools_are_execute() {
        let policy = Policy::default();
        for (tool, class) in SUITE_TOOLS {
            assert_eq!(policy.class_of(tool), *class, "{tool}");
        }
        assert_eq!(policy.class_of("vault_list_tasks"), EffectClass::Read);
        assert_eq!(policy.class_of("email_send"), EffectClass::Execute);
        assert_eq!(policy.class_of("test_simple_text"), EffectClass::Execute);
        assert_eq!(policy.class_of("anything_at_all"), EffectClass::Execute);
    }

    /// An exact name beats any glob; among globs the most specific wins; ties go to the
    /// stricter class.
    #[test]
    fn exact_beats_glob_longest_glob_wins_ties_are_stricter() {
        let p = policy(&[
            ("test_*", EffectClass::Read),
            ("test_image_*", EffectClass::Draft),
            ("test_image_big", EffectClass::Read),
            ("*_text", EffectClass::Draft),
            ("x*", EffectClass::Read),
            ("*y", EffectClass::Execute),
        ]);
        assert_eq!(p.class_of("test_audio"), EffectClass::Read);
        assert_eq!(p.class_of("test_image_small"), EffectClass::Draft);
        assert_eq!(p.class_of("test_image_big"), EffectClass::Read);
        // `test_*` and `*_text` both have 5 literal characters: a tie, so the stricter.
        assert_eq!(p.class_of("test_text"), EffectClass::Draft);
        // `x*` and `*y` tie at 1: execute is stricter.
        assert_eq!(p.class_of("xy"), EffectClass::Execute);
    }

    /// A pinned class can raise a suite tool but never lower it below the contract.
    #[test]
    fn suite_tools_never_drop_below_their_contract_class() {
        let p = policy(&[
            ("email_*", EffectClass::Read),
            ("vault_list_tasks", EffectClass::Draft),
        ]);
        assert_eq!(p.class_of("email_send"), EffectClass::Execute);
        assert_eq!(p.class_of("email_fetch"), EffectClass::Draft);
        assert_eq!(p.class_of("vault_list_tasks"), EffectClass::Draft);
    }

    /// The cloud zone hides execute tools; the local zone shows everything.
    #[test]
    fn cloud_hides_execute_tools() {
        let p = policy(&[("test_*", EffectClass::Read)]);
        assert!(!p.visible_in(Zone::Cloud, "email_send"));
        assert!(!p.visible_in(Zone::Cloud, "unknown_tool"));
        assert!(p.visible_in(Zone::Cloud, "email_draft_reply"));
        assert!(p.visible_in(Zone::Cloud, "test_simple_text"));
        assert!(p.visible_in(Zone::Local, "email_send"));
    }

    /// A cloud call to an execute tool is refused with the contract's reason, whatever the
    /// role.
    #[test]
    fn cloud_refuses_execute_calls_by_name() {
        let p = Policy::default();
        assert_eq!(
            p.decide(Zone::Cloud, "owner", "email_send"),
            Decision::Refuse(
                "email_send is an execute tool: it belongs to the local executive; the cloud zone only reads and drafts"
                    .to_owned()
            )
        );
        assert!(p.decide(Zone::Local, "owner", "email_send").is_allowed());
        assert!(
            p.decide(Zone::Cloud, "owner", "email_draft_reply")
                .is_allowed()
        );
    }

    /// A role lacking the class or the tool pattern is refused, naming the role and what it
    /// lacks.
    #[test]
    fn roles_limit_classes_and_tools() {
        let mut roles = builtin_roles();
        roles.insert(
            "triage".to_owned(),
            Role {
                classes: [EffectClass::Read, EffectClass::Draft].into(),
                tools: vec![glob("vault_*"), glob("email_triage")],
            },
        );
        let p = Policy::from_parts([], roles);
        assert!(
            p.decide(Zone::Local, "triage", "vault_claim_task")
                .is_allowed()
        );
        assert!(p.decide(Zone::Local, "triage", "email_triage").is_allowed());
        let Decision::Refuse(why) = p.decide(Zone::Local, "triage", "email_draft_reply") else {
            panic!("allowed a tool outside the role's patterns");
        };
        assert_eq!(
            why,
            "role triage may not use email_draft_reply: its tools are limited to vault_*, email_triage"
        );
        let Decision::Refuse(why) = p.decide(Zone::Local, "reader", "vault_claim_task") else {
            panic!("a reader drafted");
        };
        assert_eq!(
            why,
            "role reader may not use draft tools, and vault_claim_task is a draft tool (the role's classes: read)"
        );
        let Decision::Refuse(why) = p.decide(Zone::Local, "ghost", "vault_status") else {
            panic!("an undefined role was allowed");
        };
        assert!(why.contains("role ghost is not defined"), "{why}");
    }

    /// Zones and classes read and print as lowercase words.
    #[test]
    fn zone_and_class_round_trip_as_lowercase() {
        assert_eq!("cloud".parse::<Zone>(), Ok(Zone::Cloud));
        assert_eq!(Zone::Local.to_string(), "local");
        assert!("Cloud".parse::<Zone>().is_err());
        assert_eq!("draft".parse::<EffectClass>(), Ok(EffectClass::Draft));
        assert_eq!(
            serde_json::to_string(&EffectClass::Execute).unwrap(),
            "\"execute\""
        );
        assert!(
            EffectClass::Read < EffectClass::Draft && EffectClass::Draft < EffectClass::Execute
        );
    }
}

//! The config's promises: every error at its key and line, all at once; defaults; the schema;
//! override order; reload.

use std::{path::Path, str::FromStr, time::Duration};

use serde_json::Value;

use super::*;
use crate::policy::{EffectClass, Policy, Zone, cloud_forbidden_credentials};

const EXAMPLE: &str = include_str!("../../../specs/aie.example.toml");

fn at(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, Path::new("/etc/aie/aie.toml"))
}

fn errors_of(text: &str) -> Vec<String> {
    match at(text) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(errors) => errors.errors().iter().map(ToString::to_string).collect(),
    }
}

/// The shipped example validates, and its normalized form is the committed snapshot.
#[test]
fn example_file_normalizes_to_the_snapshot() {
    let config = at(EXAMPLE).unwrap_or_else(|e| panic!("example refused:\n{e}"));
    insta::assert_json_snapshot!("example", config);
}

/// The example on disk passes `check`, which `aie config check` runs.
#[test]
fn example_file_passes_check() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/aie.example.toml");
    check(&path).unwrap_or_else(|e| panic!("{e}"));
}

/// An empty file is the default config: every section optional.
#[test]
fn empty_file_is_the_default_config() {
    let config = at("").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.listen, "127.0.0.1:8700".parse().unwrap());
    assert_eq!(config.sync.interval_secs, 60);
    assert_eq!(config.sync.lease_minutes, 30);
    assert_eq!(config.http.max_body_bytes, 4 * 1024 * 1024);
    assert_eq!(config.limits.refusal_audit_burst.get(), 20);
    assert_eq!(config.limits.refusal_audit_per_second.get(), 2);
    assert_eq!(
        config.gateway.roles.keys().collect::<Vec<_>>(),
        ["drafter", "owner", "reader"]
    );
}

/// Every error of a file comes back at once, each naming its line and key, in line order:
/// structural errors (unknown key, type, enum, missing key) and semantic ones together.
#[test]
fn all_errors_come_back_with_line_and_key() {
    let text = r#"zone = "moon"
listen = "localhost"

[http]
alowed_hosts = ["x"]
max_body_bytes = "big"

[[gateway.clients]]
name = "bot"
role = "owner"
token = "hunter2"

[[upstream]]
name = "fixtures"
url = "/mcp"

[[upstream]]
url = "http://127.0.0.1:9101/mcp"

[policy.tools]
"test_*" = "write"
"#;
    assert_eq!(
        errors_of(text),
        [
            "/etc/aie/aie.toml:1: zone: expected one of `cloud`, `local`, found `moon`",
            "/etc/aie/aie.toml:2: listen: invalid socket address syntax: write IP:PORT, e.g. 127.0.0.1:8700 or [::1]:8700",
            "/etc/aie/aie.toml:5: http.alowed_hosts: unknown key; did you mean `allowed_hosts`?",
            "/etc/aie/aie.toml:6: http.max_body_bytes: expected an integer, found a string",
            "/etc/aie/aie.toml:8: gateway.clients[0].token_sha256: missing; this key is required: SHA-256 of the client's bearer token, 64 hex digits; never the token itself",
            "/etc/aie/aie.toml:11: gateway.clients[0].token: never put a client's token in the config: store its SHA-256 in token_sha256 (printf %s \"$TOKEN\" | sha256sum)",
            "/etc/aie/aie.toml:15: upstream[0].url: relative URL without a base",
            "/etc/aie/aie.toml:17: upstream[1].name: missing; this key is required: Short name (`[a-z0-9_-]`, at most 24 characters, unique); its tools are exposed as `NAME_TOOL` unless `prefix = false`",
            "/etc/aie/aie.toml:21: policy.tools.\"test_*\": expected one of `read`, `draft`, `execute`, found `write`",
        ]
    );
}

/// A TOML syntax error names its line.
#[test]
fn syntax_errors_name_their_line() {
    let errors = errors_of("zone = \"local\"\n\nlisten = \n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("/etc/aie/aie.toml:3: "), "{errors:?}");
}

/// Secrets are refused wherever people tend to write them, each with what to do instead.
#[test]
fn literal_secrets_are_refused_with_the_way_to_store_them() {
    let errors = errors_of(
        r#"
[email]
smtp_url = "smtp://me:secret@mail.example.com:587"
[email.imap]
host = "imap.example.com"
user = "me"
password = "secret"
[[upstream]]
name = "x"
url = "https://x.example.com/mcp"
headers = { Authorization = "Bearer abc" }
headers_from_env = { X-Api-Key = "Bearer abc" }
"#,
    );
    let joined = errors.join("\n");
    assert!(
        joined.contains(":3: email.smtp_url: carries a password"),
        "{joined}"
    );
    assert!(joined.contains("email.smtp_password_file"), "{joined}");
    assert!(
        joined.contains(":4: email.imap.password_file: missing"),
        "{joined}"
    );
    assert!(
        joined.contains(":7: email.imap.password: never put a password in the config"),
        "{joined}"
    );
    assert!(
        joined.contains(":11: upstream[0].headers: never put header values in the config"),
        "{joined}"
    );
    assert!(
        joined.contains(
            ":12: upstream[0].headers_from_env.X-Api-Key: is not an environment variable name"
        ),
        "{joined}"
    );
}

/// Cross-references and values a schema cannot check are validated too.
#[test]
fn semantic_checks_name_what_to_fix() {
    let errors = errors_of(
        r#"
agent = "../etc"
vault = "/srv/vault"
state = "/srv/vault/.state"
remote = "git@github.com:me/vault.git"
[http]
allowed_origins = ["https://ops.example.com/path"]
allowed_hosts = ["example.com:8443"]
tls_cert = "cert.pem"
[[gateway.clients]]
name = "a"
role = "admin"
token_sha256 = "abc"
[[upstream]]
name = "email"
url = "ftp://x/mcp"
[policy.tools]
"email_*" = "read"
"bad.name" = "read"
[limits]
payment_amount_per_day = { eur = "5.00" }
[limits.per_client]
requests_per_minute = 0
[[email.rules]]
category = "x"
[sync]
interval_secs = 0
"#,
    );
    let joined = errors.join("\n");
    for expected in [
        ":2: agent: ",
        ":4: state: is inside the vault (/srv/vault)",
        ":5: remote: scp-like remotes are not supported; write it as ssh://git@github.com/me/vault.git",
        ":7: http.allowed_origins[0]: an origin has no path",
        ":8: http.allowed_hosts[0]: give the host without a port",
        ":9: http.tls_cert: is given without http.tls_key",
        ":12: gateway.clients[0].role: role admin is not defined; use one of drafter, owner, reader",
        ":13: gateway.clients[0].token_sha256: must be 64 hex digits",
        ":15: upstream[0].name: email is the prefix of aie's own tools",
        ":16: upstream[0].url: scheme ftp:// is not MCP over HTTP",
        ":18: policy.tools.\"email_*\": would lower email_send from execute to read",
        ":19: policy.tools.\"bad.name\": '.' cannot occur in a tool name",
        ":21: limits.payment_amount_per_day.eur: is not an ISO 4217 currency code",
        ":23: limits.per_client.requests_per_minute: must be at least 1",
        ":24: email.rules[0]: matches nothing; give from, domain, keywords or header",
        ":27: sync.interval_secs: must be at least 1",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
}

/// Daily payment budgets are decimal strings per ISO 4217 currency, read exactly in minor
/// units; a float, an unknown currency or more places than the currency has are refused at
/// the key and line.
#[test]
fn payment_budgets_are_exact_money() {
    let limits = at("[limits]\npayment_amount_per_day = { EUR = \"500.00\", JPY = \"20000\", KWD = \"1.250\" }\n")
        .unwrap_or_else(|e| panic!("{e}"))
        .limits;
    let minor: Vec<(String, i64)> = limits
        .payment_amount_per_day
        .iter()
        .map(|(c, m)| (c.code().to_owned(), m.minor()))
        .collect();
    assert_eq!(
        minor,
        [
            ("EUR".to_owned(), 50_000),
            ("JPY".to_owned(), 20_000),
            ("KWD".to_owned(), 1_250)
        ]
    );
    let errors = errors_of(
        "[limits]\npayment_amount_per_day = { EUR = 500.0, USD = \"1.005\", XYZ = \"1\", GBP = \"-3\" }\n",
    );
    let joined = errors.join("\n");
    for expected in [
        "limits.payment_amount_per_day.EUR: expected a string, found a float",
        "limits.payment_amount_per_day.USD: \"1.005\" has more decimal places than USD has (2)",
        "limits.payment_amount_per_day.XYZ: XYZ is not a currency aie knows",
        "limits.payment_amount_per_day.GBP: \"-3\" is not a decimal amount",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
}

/// The rate of HTTP-refusal audit records comes from `[limits]` (20 at once, then 2 a second,
/// when not given); 0, a negative number or a fraction is refused at its key and line.
#[test]
fn refusal_audit_rate_is_read_and_checked() {
    let rate = |text: &str| {
        let limits = at(text).unwrap_or_else(|e| panic!("{e}")).limits;
        (
            limits.refusal_audit_burst.get(),
            limits.refusal_audit_per_second.get(),
        )
    };
    assert_eq!(rate("[limits]\nemails_per_hour = 3\n"), (20, 2));
    assert_eq!(rate("[limits]\nrefusal_audit_burst = 5\n"), (5, 2));
    assert_eq!(
        rate("[limits]\nrefusal_audit_burst = 1\nrefusal_audit_per_second = 50\n"),
        (1, 50)
    );
    assert_eq!(
        errors_of("[limits]\nrefusal_audit_burst = 0\nrefusal_audit_per_second = 0\n"),
        [
            "/etc/aie/aie.toml:2: limits.refusal_audit_burst: must be at least 1, found 0",
            "/etc/aie/aie.toml:3: limits.refusal_audit_per_second: must be at least 1, found 0",
        ]
    );
    assert_eq!(
        errors_of("[limits]\nrefusal_audit_burst = -1\nrefusal_audit_per_second = 0.5\n"),
        [
            "/etc/aie/aie.toml:2: limits.refusal_audit_burst: must be at least 1, found -1",
            "/etc/aie/aie.toml:3: limits.refusal_audit_per_second: expected an integer, found a float",
        ]
    );
    // The schema an editor validates against says so too.
    let limits = &schema()["$defs"]["Limits"]["properties"];
    assert_eq!(limits["refusal_audit_burst"]["minimum"], 1);
    assert_eq!(limits["refusal_audit_per_second"]["minimum"], 1);
}

/// The listener bounds in `[limits]` (sessions, requests in service, idle time) default to
/// 256, 32, 32 and 120 s and reach the listener's options; the pending-approvals bound
/// defaults to 100; 0 or an idle time under 10 s is refused at its key and line.
#[test]
fn listener_bounds_are_read_and_checked() {
    let defaults = at("").unwrap().limits;
    assert_eq!(
        defaults.listener(),
        crate::bounds::ListenerLimits {
            max_sessions: 256,
            max_sessions_per_client: 32,
            max_in_flight_per_client: 32,
            session_idle: Duration::from_secs(120),
        }
    );
    assert_eq!(defaults.max_pending_approvals, 100);
    let config = at("[limits]
max_sessions = 50
max_sessions_per_client = 4
max_in_flight_per_client = 8
session_idle_secs = 30
max_pending_approvals = 7
")
    .unwrap_or_else(|e| panic!("{e}"));
    let options = config.http_options("127.0.0.1:9000".parse().unwrap());
    assert_eq!(options.limits.max_sessions, 50);
    assert_eq!(options.limits.max_sessions_per_client, 4);
    assert_eq!(options.limits.max_in_flight_per_client, 8);
    assert_eq!(options.limits.session_idle, Duration::from_secs(30));
    assert_eq!(config.limits.max_pending_approvals, 7);
    assert_eq!(
        errors_of("[limits]\nmax_sessions = 0\nsession_idle_secs = 5\n"),
        [
            "/etc/aie/aie.toml:2: limits.max_sessions: must be at least 1, found 0",
            "/etc/aie/aie.toml:3: limits.session_idle_secs: must be at least 10, found 5",
        ]
    );
}

/// `[approvals]`: hand moves off and 7 days at most unless the file says otherwise; a
/// lifetime of 0 hours or over a year, or a non-boolean switch, is refused at its key and line.
#[test]
fn approvals_settings_are_read_and_checked() {
    let approvals = at("").unwrap().approvals;
    assert!(!approvals.accept_hand_moves);
    assert_eq!(approvals.max_lifetime_hours, 168);
    assert_eq!(approvals.max_lifetime(), chrono::TimeDelta::days(7));
    let approvals = at("[approvals]\naccept_hand_moves = true\nmax_lifetime_hours = 24\n")
        .unwrap()
        .approvals;
    assert!(approvals.accept_hand_moves);
    assert_eq!(approvals.max_lifetime(), chrono::TimeDelta::hours(24));
    assert_eq!(
        errors_of("[approvals]\naccept_hand_moves = \"yes\"\nmax_lifetime_hours = 0\n"),
        [
            "/etc/aie/aie.toml:2: approvals.accept_hand_moves: expected true or false, found a string",
            "/etc/aie/aie.toml:3: approvals.max_lifetime_hours: must be at least 1, found 0",
        ]
    );
    assert_eq!(
        errors_of("[approvals]\nmax_lifetime_hours = 87600\nmax_lifetime = \"7d\"\n"),
        [
            "/etc/aie/aie.toml:2: approvals.max_lifetime_hours: must be at most 8760, found 87600",
            "/etc/aie/aie.toml:3: approvals.max_lifetime: unknown key; the keys here are accept_hand_moves, max_lifetime_hours",
        ]
    );
    let props = &schema()["$defs"]["Approvals"]["properties"];
    assert_eq!(props["max_lifetime_hours"]["maximum"], 8760);
}

/// Relative paths in the file are taken from its folder; secret files stay relative to the
/// state folder.
#[test]
fn relative_paths_resolve_against_the_file_or_the_state_folder() {
    let config = at(r#"
vault = "vault"
state = "../state"
remote = "../remote.git"
[email]
maildir = "mail"
smtp_password_file = "smtp-password"
"#)
    .unwrap();
    assert_eq!(config.vault.as_deref(), Some(Path::new("/etc/aie/vault")));
    assert_eq!(
        config.state.as_deref(),
        Some(Path::new("/etc/aie/../state"))
    );
    assert_eq!(config.remote.unwrap().as_str(), "/etc/aie/../remote.git");
    assert_eq!(
        config.email.maildir.as_deref(),
        Some(Path::new("/etc/aie/mail"))
    );
    assert_eq!(
        config.email.smtp_password_file.as_deref(),
        Some(Path::new("smtp-password"))
    );
    // A state folder beside the vault is fine, however it is spelt.
    at("vault = \"/srv/vault\"\nstate = \"/srv/vault/../state\"\n").unwrap();
    let errors = errors_of("vault = \"/srv/vault\"\nstate = \"/srv/x/../vault/./s\"\n");
    assert!(
        errors[0].contains("state: is inside the vault"),
        "{errors:?}"
    );
    let errors = errors_of("[payments]\napi_key_file = \"../../etc/key\"\n");
    assert!(
        errors[0].contains("payments.api_key_file: climbs out of the state folder"),
        "{errors:?}"
    );
}

/// Mail settings are normalized the way triage compares them, and each rule gets a name.
#[test]
fn email_rules_are_normalized_and_named() {
    let config = at(r#"
[email]
from = "Me@Example.com"
vip_domains = [".BigClient.example"]
builtin_rules = false
[[email.rules]]
keywords = ["Invoice", " Statement "]
category = "billing"
[[email.rules]]
name = "lists"
header = "List-Id"
priority = "low"
[[email.rules]]
header = "Precedence:  bulk"
priority = "low"
"#)
    .unwrap();
    let email = &config.email;
    assert_eq!(email.from.as_deref(), Some("me@example.com"));
    assert_eq!(email.vip_domains, ["bigclient.example"]);
    assert!(!email.builtin_rules);
    assert_eq!(email.rules[0].name, "rule-1");
    assert_eq!(email.rules[0].keywords, ["invoice", "statement"]);
    assert_eq!(email.rules[1].name, "lists");
    assert_eq!(email.rules[1].header.as_deref(), Some("list-id"));
    assert_eq!(email.rules[2].header.as_deref(), Some("precedence: bulk"));
    assert!(
        at("").unwrap().email.builtin_rules,
        "built-in rules are on by default"
    );
    let errors = errors_of(
        "[[email.rules]]\nname = \"a\"\nfrom = \"nobody\"\npriority = \"high\"\n[[email.rules]]\nname = \"a\"\nkeywords = [\"\"]\npriority = \"high\"\n",
    );
    assert_eq!(
        errors,
        [
            "/etc/aie/aie.toml:3: email.rules[0].from: give one email address, e.g. boss@example.com",
            "/etc/aie/aie.toml:6: email.rules[1].name: rule a is defined twice; give each rule its own name",
            "/etc/aie/aie.toml:7: email.rules[1].keywords[0]: is empty; give the text to look for",
        ]
    );
}

/// The contract's order: the file, then flags over it, then `AIE_*` variables over both.
#[test]
fn overrides_apply_file_then_flags_then_environment() {
    let mut config = at("zone = \"cloud\"\nvault = \"/file/vault\"\nlisten = \"127.0.0.1:1000\"\nagent = \"from-file\"\n").unwrap();
    let flags = Overrides {
        zone: Some(Zone::Local),
        vault: Some("/flag/vault".into()),
        listen: Some("127.0.0.1:2000".parse().unwrap()),
        ..Overrides::default()
    };
    let env = Overrides::from_lookup(|var| match var {
        "AIE_VAULT" => Some("/env/vault".to_owned()),
        "AIE_SMTP" => Some("smtps://mail.example.com:465".to_owned()),
        // Empty counts as unset.
        "AIE_LISTEN" => Some(String::new()),
        _ => None,
    })
    .unwrap();
    config.apply_overrides(&flags.then(env));
    assert_eq!(config.zone, Some(Zone::Local), "flag over file");
    assert_eq!(
        config.vault.as_deref(),
        Some(Path::new("/env/vault")),
        "env over flag"
    );
    assert_eq!(
        config.listen,
        "127.0.0.1:2000".parse().unwrap(),
        "flag kept"
    );
    assert_eq!(config.agent_name().as_str(), "from-file", "file kept");
    assert!(config.email.smtp_url.unwrap().requires_tls());
}

/// A bad `AIE_*` value is an error naming the variable.
#[test]
fn bad_environment_values_name_the_variable() {
    let err =
        Overrides::from_lookup(|var| (var == "AIE_ZONE").then(|| "moon".to_owned())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "AIE_ZONE=\"moon\": unknown zone \"moon\": expected cloud or local"
    );
    let err =
        Overrides::from_lookup(|var| (var == "AIE_REMOTE").then(|| "http://x/v.git".to_owned()))
            .unwrap_err();
    assert!(err.to_string().starts_with("AIE_REMOTE="), "{err}");
}

/// `[http]` becomes the listener's options.
#[test]
fn http_section_maps_to_listener_options() {
    let config = at(r#"
[http]
allowed_hosts = ["AIE.example.com"]
allowed_origins = ["HTTPS://Ops.Example.com:443/"]
max_body_bytes = 1024
request_timeout_secs = 5
concurrency_limit = 8
tls_cert = "c.pem"
tls_key = "k.pem"
"#)
    .unwrap();
    let options = config.http_options("127.0.0.1:9000".parse().unwrap());
    assert_eq!(options.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(options.allowed_hosts, ["aie.example.com"]);
    assert_eq!(options.allowed_origins, ["https://ops.example.com"]);
    assert_eq!(options.max_body_bytes, 1024);
    assert_eq!(options.request_timeout, Duration::from_secs(5));
    assert_eq!(options.concurrency_limit, 8);
    let tls = options.tls.unwrap();
    assert_eq!(tls.cert, Path::new("/etc/aie/c.pem"));
    assert_eq!(tls.key, Path::new("/etc/aie/k.pem"));
}

/// The config's roles and pinned classes drive the policy.
#[test]
fn policy_is_built_from_the_config() {
    let config = at(EXAMPLE).unwrap();
    let policy = Policy::new(&config);
    assert_eq!(policy.class_of("test_simple_text"), EffectClass::Read);
    assert_eq!(policy.class_of("test_error_handling"), EffectClass::Draft);
    assert_eq!(policy.class_of("other_tool"), EffectClass::Execute);
    assert!(
        policy
            .decide(Zone::Local, "triage", "email_triage")
            .is_allowed()
    );
    assert!(
        !policy
            .decide(Zone::Local, "triage", "email_send")
            .is_allowed()
    );
}

/// A cloud config may hold nothing that executes: the credentials are listed by key, and
/// `check` refuses a `zone = "cloud"` file holding any, at its line.
#[test]
fn cloud_refuses_executing_credentials() {
    let mut config = at(EXAMPLE).unwrap();
    assert_eq!(
        cloud_forbidden_credentials(&config)
            .iter()
            .map(|c| c.split(':').next().unwrap_or_default())
            .collect::<Vec<_>>(),
        [
            "email.smtp_password_file",
            "whatsapp.session_dir",
            "payments.api_key_file"
        ]
    );
    config.email = EmailConfig::default();
    config.whatsapp = WhatsappConfig::default();
    config.payments = PaymentsConfig::default();
    assert!(cloud_forbidden_credentials(&config).is_empty());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloud.toml");
    std::fs::write(
        &file,
        "zone = \"cloud\"\n\n[whatsapp]\ntoken_file = \"wa-token\"\n",
    )
    .unwrap();
    let errors = check(&file).unwrap_err().to_string();
    assert!(
        errors.contains("cloud.toml:4: whatsapp.token_file: a WhatsApp token can send messages"),
        "{errors}"
    );
    std::fs::write(
        &file,
        "zone = \"local\"\n\n[whatsapp]\ntoken_file = \"wa-token\"\n",
    )
    .unwrap();
    check(&file).unwrap();
}

/// SMTP passwords never show in logs or snapshots.
#[test]
fn smtp_passwords_are_masked() {
    let url = SmtpUrl::from_str("smtp://me:secret@mail.example.com:25").unwrap();
    assert!(url.has_password());
    assert_eq!(url.to_string(), "smtp://me:***@mail.example.com:25");
    assert!(!format!("{url:?}").contains("secret"));
    assert_eq!(url.url().password(), Some("secret"));
    assert!(SmtpUrl::from_str("http://mail.example.com").is_err());
    assert!(SmtpUrl::from_str("smtp://mail.example.com?tls=maybe").is_err());
}

/// Remotes are paths or file/ssh/https URLs without credentials.
#[test]
fn git_remotes_accept_paths_and_secure_urls_only() {
    for ok in [
        "/srv/vault.git",
        "file:///srv/vault.git",
        "ssh://git@host/v.git",
        "https://host/v.git",
    ] {
        assert!(GitRemote::from_str(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "http://host/v.git",
        "https://u:p@host/v.git",
        "git@host:v.git",
        "ftp://h/v",
    ] {
        assert!(GitRemote::from_str(bad).is_err(), "{bad}");
    }
}

/// Every key in the schema is documented, so the schema can stand as the reference.
#[test]
fn schema_documents_every_key() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (key, sub) in props {
                let has = sub
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.is_empty());
                if !has {
                    missing.push(format!("{path}.{key}"));
                }
                walk(&format!("{path}.{key}"), sub, missing);
            }
        }
        if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
            for (name, def) in defs {
                walk(name, def, missing);
            }
        }
    }
    let schema = schema();
    assert_eq!(schema["title"], "aie.toml");
    assert_eq!(schema["additionalProperties"], false);
    let mut missing = Vec::new();
    walk("", &schema, &mut missing);
    assert!(missing.is_empty(), "undocumented keys: {missing:?}");
    // TOML has no null: optional keys are simply absent.
    assert!(!schema.to_string().contains("\"null\""));
}

/// The watcher publishes a changed file within a poll, keeps the running config when the new
/// file is bad, and reports why.
#[tokio::test(start_paused = true)]
async fn watcher_reloads_changes_and_keeps_the_old_config_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aie.toml");
    std::fs::write(&file, "[sync]\ninterval_secs = 10\n").unwrap();
    let overrides = Overrides {
        zone: Some(Zone::Local),
        ..Overrides::default()
    };
    let mut watcher = ConfigWatcher::load(&file, overrides).await.unwrap();
    let mut rx = watcher.subscribe();
    assert_eq!(rx.borrow_and_update().sync.interval_secs, 10);
    assert_eq!(
        watcher.reload_if_changed().await.unwrap(),
        Reloaded::Unchanged
    );

    // A bad file: refused with its errors, the running config stays, nobody is woken.
    std::fs::write(&file, "[sync]\ninterval_secs = 0\n").unwrap();
    let errors = watcher.reload_if_changed().await.unwrap_err();
    assert!(
        errors
            .to_string()
            .contains(":2: sync.interval_secs: must be at least 1"),
        "{errors}"
    );
    assert_eq!(watcher.current().sync.interval_secs, 10);
    assert!(!rx.has_changed().unwrap());
    // The same bad bytes are not reported again on every poll.
    assert_eq!(
        watcher.reload_if_changed().await.unwrap(),
        Reloaded::Unchanged
    );

    // The background task picks up the next good version within a poll interval, and the
    // overrides are applied again.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(watcher.run(shutdown.clone()));
    std::fs::write(&file, "zone = \"cloud\"\n[sync]\ninterval_secs = 20\n").unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("reloaded within 5 s")
        .unwrap();
    let config = rx.borrow_and_update().clone();
    assert_eq!(config.sync.interval_secs, 20);
    assert_eq!(config.zone, Some(Zone::Local), "overrides survive a reload");
    shutdown.cancel();
    task.await.unwrap();
}

/// `reload` (SIGHUP's path) reads the file even when unchanged, and fails without changing
/// anything when it is gone.
#[tokio::test]
async fn forced_reload_reports_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aie.toml");
    std::fs::write(&file, "agent = \"a1\"\n").unwrap();
    let mut watcher = ConfigWatcher::load(&file, Overrides::default())
        .await
        .unwrap();
    assert_eq!(watcher.reload().await.unwrap().agent_name().as_str(), "a1");
    std::fs::remove_file(&file).unwrap();
    let errors = watcher.reload().await.unwrap_err().to_string();
    assert!(errors.contains("cannot be read"), "{errors}");
    assert_eq!(watcher.current().agent_name().as_str(), "a1");
}

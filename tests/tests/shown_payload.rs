//! Issue 11, items 1 and 2, with real processes: what runs is what the owner saw, and nothing
//! reaches the owner unescaped (contract invariant 8).
//!
//! `aie up --zone cloud` drafts from a Maildir, `aie up --zone local` syncs through a real
//! bare git remote and sends through aiosmtpd; the official Python MCP SDK is the agent; the
//! attacker holds the cloud's push access and uses nothing but plain `git`; the owner runs
//! the `aie approvals` command, with no terminal (its stdin is not a TTY) unless a test gives
//! it one with `script`. Every check looks from outside: the command's exit status and bytes,
//! the SMTP sink, local's ledger and `Dashboard.md`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use aie_e2e::{
    Aie, aie_bin, maildir_holding, run,
    zones::{SmtpSink, agent_call, aie_in, approve_in, bare_remote, cloud_drafts, up},
};
use aie_shared::vault::{AgentName, ApprovalId, ApprovalRequest, Domain, Vault, payload_sha256};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

/// Both zones sync only when told to (the loop's first round runs at start).
const CONFIG: &str = "[sync]\ninterval_secs = 3600\n";

/// The genuine mail: Alice asks about invoice 42.
const ALICE_MAIL: &str = "From: Alice <alice@example.org>\r\n\
To: Owner <owner@example.com>\r\n\
Subject: Invoice 42\r\n\
Message-ID: <inv42@example.org>\r\n\
\r\n\
Please pay invoice 42 by Friday.\r\n";

/// An outside sender's mail, with no cloud access at all: a Message-ID that clears the
/// screen and homes the cursor, a Subject and a display name holding a right-to-left
/// override.
const ESCAPE_MAIL: &str = "From: \"Eve\u{202e}moc.elppa\" <eve@example.org>\r\n\
To: Owner <owner@example.com>\r\n\
Subject: Invoice \u{202e}fdp.exe\r\n\
Message-ID: <\u{1b}[2J\u{1b}[Hfake@x>\r\n\
\r\n\
Please pay the attached invoice.\r\n";

/// One test's world: a temp dir holding the bare remote, the zones' folders and the
/// attacker's clone, and the SMTP sink that local sends through.
struct Scene {
    root: PathBuf,
    remote: PathBuf,
    sink: SmtpSink,
    // Last, so the processes above stop before their folders go.
    _dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let remote = bare_remote(&root);
        let sink = SmtpSink::start(&root);
        Scene {
            root,
            remote,
            sink,
            _dir: dir,
        }
    }

    fn config(&self) -> String {
        let path = self.root.join("aie.toml");
        std::fs::write(&path, CONFIG).expect("config");
        path.display().to_string()
    }

    /// `aie up --zone cloud` reading `mail` from a Maildir.
    fn cloud(&self, mail: &str) -> Aie {
        let maildir = maildir_holding(&self.root.join("maildir"), "1.mail", mail);
        let maildir = maildir.display().to_string();
        let config = self.config();
        up(
            "cloud",
            &self.root,
            &self.remote,
            &["--maildir", &maildir, "--config", &config],
            &[],
        )
    }

    /// `aie up --zone local`, sending through the sink.
    fn local(&self) -> Aie {
        let config = self.config();
        up(
            "local",
            &self.root,
            &self.remote,
            &["--smtp", &self.sink.url(), "--config", &config],
            &[],
        )
    }

    fn vault(&self) -> PathBuf {
        self.root.join("local/vault")
    }

    /// `aie approvals ARGS` on local's folders.
    fn approvals(&self, args: &[&str]) -> Output {
        let mut all = vec!["approvals"];
        all.extend_from_slice(args);
        aie_in("local", &self.root, &all)
    }

    /// Local's approval ledger entries for `id` of kind `event`.
    fn ledger(&self, id: &str, event: &str) -> Vec<Value> {
        std::fs::read_to_string(self.root.join("local/state/approvals.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("ledger line"))
            .filter(|e| e["approval_id"] == id && e["event"] == event)
            .collect()
    }
}

/// Local's `vault_sync` through its gateway, which must succeed online.
fn sync(local: &Aie) {
    let answer = agent_call(&local.url, "vault_sync", &json!({}));
    assert_eq!(answer["is_error"], false, "vault_sync: {}", answer["text"]);
    assert!(
        answer["structured"]["offline"].is_null(),
        "local's sync is offline: {answer:#}"
    );
}

/// `git -C DIR ARGS`, which must succeed; its output.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=mallory", "-c", "user.email=m@evil.example"])
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// The attacker's push: a plain clone of the remote where `change` edits the tree, then a
/// commit pushed to `main`.
fn attacker_pushes(scene: &Scene, message: &str, change: impl Fn(&Path)) {
    let work = scene.root.join("attacker");
    if !work.exists() {
        git(
            &scene.root,
            &[
                "clone",
                "-q",
                &scene.remote.display().to_string(),
                &work.display().to_string(),
            ],
        );
    }
    git(&work, &["pull", "-q", "--rebase", "origin", "main"]);
    change(&work);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", message]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
}

/// What the owner's terminal would receive holds no control character but newline, no DEL,
/// no C1 control, no bidi override or isolate, no zero-width character: nothing a terminal
/// acts on instead of showing.
fn assert_terminal_safe(what: &str, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        assert!(
            (b >= 0x20 || b == b'\n') && b != 0x7f,
            "{what}: raw control byte {b:#04x} at {i}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what}: not UTF-8: {e}"));
    for c in text.chars() {
        let code = u32::from(c);
        assert!(
            !(0x80..=0x9f).contains(&code)
                && !(0x202a..=0x202e).contains(&code)
                && !(0x2066..=0x2069).contains(&code)
                && !(0x200b..=0x200f).contains(&code),
            "{what}: raw U+{code:04X}: {text}"
        );
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The finding: the owner runs `show --json` (recipient alice, hash H1); the attacker, who
/// holds the cloud's push access, pushes the same pending file with `to: mallory` and its
/// hash recomputed; local syncs through its own `vault_sync`; the owner's `approve ID
/// --sha256 <H1>` is refused with one line naming the hash the payload has now, nothing is
/// approved in the ledger, and `email_send` sends nothing. Without `--sha256` and with no
/// terminal, `approve` refuses and says how.
#[test]
fn shown_payload_changed_after_show_is_never_approved() {
    let scene = Scene::new();
    let id = {
        let cloud = scene.cloud(ALICE_MAIL);
        cloud_drafts(&cloud, "Paid today, thanks.").approval_id
    };
    let local = scene.local();
    sync(&local);

    let shown = scene.approvals(&["show", &id, "--json"]);
    assert!(shown.status.success(), "show --json");
    let view: Value = serde_json::from_slice(&shown.stdout).expect("show --json is JSON");
    assert_eq!(view["approval_id"], id.as_str(), "{view:#}");
    assert_eq!(view["tool"], "email_send", "{view:#}");
    assert!(
        view["payload"]["to"]
            .to_string()
            .contains("alice@example.org"),
        "{view:#}"
    );
    let h1 = view["payload_sha256"]
        .as_str()
        .expect("payload_sha256")
        .to_owned();
    assert_eq!(h1, payload_sha256(&view["payload"]));
    assert!(
        view["warnings"].as_array().is_some_and(Vec::is_empty),
        "{view:#}"
    );

    let pending = format!("Pending_Approval/email/{id}.md");
    attacker_pushes(&scene, "to mallory, hash recomputed", |work| {
        let path = work.join(&pending);
        let mut request = ApprovalRequest::parse(&std::fs::read_to_string(&path).expect("pending"))
            .expect("a request");
        request.meta.payload["to"] = json!(["mallory@evil.example"]);
        request.meta.payload_sha256 = payload_sha256(&request.meta.payload);
        std::fs::write(&path, request.render().expect("render")).expect("push");
    });
    sync(&local);
    let now_text = std::fs::read_to_string(scene.vault().join(&pending)).expect("pending");
    assert!(
        now_text.contains("mallory@evil.example"),
        "the sync did not bring the attacker's version: {now_text}"
    );
    let h2 = payload_sha256(
        &ApprovalRequest::parse(&now_text)
            .expect("a request")
            .meta
            .payload,
    );

    let approve = scene.approvals(&["approve", &id, "--sha256", &h1[..12]]);
    assert!(!approve.status.success(), "approved a payload never shown");
    let err = stderr(&approve);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(&h2) && err.contains(&h1[..12]), "{err}");

    let bare = scene.approvals(&["approve", &id]);
    assert!(
        !bare.status.success(),
        "approved with no hash and no terminal"
    );
    let how = stderr(&bare);
    assert_eq!(how.trim().lines().count(), 1, "one line: {how}");
    assert!(
        how.contains(&format!("aie approvals show {id}"))
            && how.contains(&format!("aie approvals approve {id} --sha256")),
        "{how}"
    );

    assert!(
        scene.ledger(&id, "approved").is_empty(),
        "the ledger approved it"
    );
    let sent = agent_call(&local.url, "email_send", &json!({"approval_id": id}));
    assert_eq!(sent["is_error"], true, "email_send ran: {sent:#}");
    assert!(scene.sink.messages().is_empty(), "mail was sent");
    assert!(scene.vault().join(&pending).is_file(), "not left pending");
}

/// A request whose payload holds a clear-screen sequence followed by a fake `show` output,
/// black-on-black text, bidi overrides and a look-alike address: `show`, `show --json`,
/// `list` and a refused `approve` put no raw control, bidi or invisible character on the
/// terminal, and the look-alike is flagged in `show`, `show --json` and `list`.
#[test]
fn shown_payload_escapes_and_lookalikes_never_reach_the_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("init");
    let state = dir.path().join("state");
    let payload = json!({
        "to": ["alice@\u{0441}ustomer.example", "bob@exam\u{202e}elp.com"],
        "cc": ["carol@\u{200b}example.org"],
        "subject": "Invoice \u{2067}42\u{2069} \u{202e}fdp.exe",
        "body": "\u{1b}[2J\u{1b}[Hok-1  pending  email_send\npayload:\n  to: alice@customer.example\n\u{1b}[30;40mWire 9,000 EUR to mallory\u{1b}[0m\n\u{9b}31m\u{7f}",
        "message_id": "<aie.ok-1@example.com>",
    });
    let request = ApprovalRequest::new(
        ApprovalId::new("ok-1").expect("id"),
        Domain::Email,
        "email_send",
        payload.clone(),
        AgentName::new("cloud").expect("agent"),
        Utc::now() + TimeDelta::hours(1),
    )
    .with_preview("\u{1b}]0;aie\u{7}\u{1b}[2JNothing to see.\u{200b}\n");
    vault.write_approval_request(&request).expect("request");
    let (v, s) = (
        vault.root().display().to_string(),
        state.display().to_string(),
    );
    let aie = |args: &[&str]| -> Output {
        run(Command::new(aie_bin())
            .args(["approvals"])
            .args(args)
            .args(["--vault", &v, "--state", &s]))
    };

    let show = aie(&["show", "ok-1"]);
    assert!(show.status.success(), "show");
    assert_terminal_safe("show", &show.stdout);
    let text = stdout(&show);
    assert!(
        text.contains(
            "WARNING: the address alice@\u{0441}ustomer.example (to[0]) mixes Latin and Cyrillic"
        ) && text.contains("it looks like alice@customer.example"),
        "{text}"
    );
    assert!(
        text.contains(
            "WARNING: the address bob@exam\\u{202e}elp.com (to[1]) holds a bidi control (U+202E)"
        ),
        "{text}"
    );
    assert!(
        text.contains("(cc[0]) holds a zero-width character (U+200B)"),
        "{text}"
    );
    assert!(
        text.contains("WARNING: body holds a control character (U+001B)"),
        "{text}"
    );
    assert!(
        text.contains("    | \\u{1b}[2J\\u{1b}[Hok-1  pending"),
        "{text}"
    );
    let hash = payload_sha256(&payload);
    assert!(text.contains(&format!("payload_sha256: {hash}")), "{text}");

    let json = aie(&["show", "ok-1", "--json"]);
    assert_terminal_safe("show --json", &json.stdout);
    let view: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(view["payload"], payload, "the JSON is the same payload");
    assert_eq!(view["payload_sha256"], hash.as_str());
    let warnings = view["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("mixes Latin and Cyrillic"))),
        "{warnings:#?}"
    );

    let list = aie(&["list"]);
    assert_terminal_safe("list", &list.stdout);
    assert!(
        stdout(&list).starts_with("ok-1  email  email_send"),
        "{}",
        stdout(&list)
    );
    assert!(stdout(&list).contains("WARNING:"), "{}", stdout(&list));

    // An error line quoting the request is escaped too.
    let refused = aie(&["approve", "ok-1", "--sha256", "\u{1b}[2J00000000"]);
    assert!(!refused.status.success());
    assert_terminal_safe("approve's error", &refused.stderr);

    // An error quoting a file's content (a domain holding a right-to-left override, which
    // the YAML reader keeps) is escaped by the one place `aie` prints errors.
    std::fs::write(
        vault.root().join("Pending_Approval/email/bad-1.md"),
        "---\napproval_id: bad-1\ndomain: \"em\u{202e}ail\"\ntool: email_send\npayload: {}\npayload_sha256: x\nrequested_by: cloud\nrequested_at: 2030-01-01T00:00:00Z\nexpires_at: 2030-01-01T00:00:00Z\n---\nhi\n",
    )
    .expect("bad-1");
    let broken = aie(&["approve", "bad-1", "--sha256", "00000000"]);
    assert!(!broken.status.success());
    assert!(
        stderr(&broken).contains("em\\u{202e}ail"),
        "{}",
        stderr(&broken)
    );
    assert_terminal_safe("approve's error on a broken file", &broken.stderr);
    let list = aie(&["list"]);
    assert_terminal_safe("list with a broken file", &list.stdout);
    std::fs::remove_file(vault.root().join("Pending_Approval/email/bad-1.md")).expect("rm");

    // Shown and flagged, the owner may still decide: the shown hash approves it.
    let approved = aie(&["approve", "ok-1", "--sha256", &hash[..8]]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    assert_terminal_safe("approve", &approved.stdout);
}

/// An outside sender with no cloud access: a mail whose Message-ID clears the screen and
/// whose Subject and display name hold a right-to-left override goes through intake
/// (`email_fetch`), a reply drafted by the cloud and local's sync; `show`, `list` and
/// `Dashboard.md` hold none of those characters raw, and the reply sent once approved carries
/// no raw escape in its `In-Reply-To` (nor anywhere in the SMTP message).
#[test]
fn shown_payload_mail_with_escapes_in_headers_reaches_the_owner_escaped() {
    let scene = Scene::new();
    let drafted = {
        let cloud = scene.cloud(ESCAPE_MAIL);
        cloud_drafts(&cloud, "We will look into it.")
    };
    let local = scene.local();
    sync(&local);
    let id = drafted.approval_id;

    let show = scene.approvals(&["show", &id]);
    assert!(show.status.success(), "show");
    assert_terminal_safe("show", &show.stdout);
    let text = stdout(&show);
    assert!(
        text.contains("in_reply_to: \"<\\u{1b}[2J\\u{1b}[Hfake@x>\""),
        "{text}"
    );
    assert!(text.contains("Invoice \\u{202e}fdp.exe"), "{text}");
    let list = scene.approvals(&["list"]);
    assert_terminal_safe("list", &list.stdout);
    assert!(stdout(&list).starts_with(&id), "{}", stdout(&list));

    let dashboard = std::fs::read(scene.vault().join("Dashboard.md")).expect("Dashboard.md");
    assert_terminal_safe("Dashboard.md", &dashboard);
    let dashboard = String::from_utf8_lossy(&dashboard);
    assert!(dashboard.contains(&id), "{dashboard}");
    assert!(
        dashboard.contains("Invoice \\u{202e}fdp.exe"),
        "{dashboard}"
    );

    let approved = approve_in("local", &scene.root, &id);
    assert!(approved.status.success(), "{}", stderr(&approved));
    let sent = agent_call(&local.url, "email_send", &json!({"approval_id": id}));
    assert_eq!(sent["is_error"], false, "email_send: {}", sent["text"]);
    let messages = scene.sink.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let message = &messages[0];
    assert!(
        !message.bytes().any(|b| b == 0x1b) && !message.contains('\u{202e}'),
        "a raw escape reached the SMTP message: {message:?}"
    );
    assert!(message.contains("fake@x"), "{message}");
}

/// With a terminal (a pseudo-terminal from `script`), `approve` without `--sha256` prints the
/// payload with its warnings and hash and asks; `y` approves exactly that payload, anything
/// else approves nothing.
#[test]
fn shown_payload_approve_on_a_terminal_prints_and_asks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = Vault::init(dir.path().join("vault")).expect("init");
    let state = dir.path().join("state");
    let payload =
        json!({"to": ["alice@\u{0441}ustomer.example"], "subject": "Re: 42", "body": "Paid."});
    for id in ["tty-1", "tty-2"] {
        let request = ApprovalRequest::new(
            ApprovalId::new(id).expect("id"),
            Domain::Email,
            "email_send",
            payload.clone(),
            AgentName::new("cloud").expect("agent"),
            Utc::now() + TimeDelta::hours(1),
        );
        vault.write_approval_request(&request).expect("request");
    }
    let on_terminal = |id: &str, answer: &str| -> Output {
        let command = format!(
            "{} approvals approve {id} --vault {} --state {}",
            aie_bin().display(),
            vault.root().display(),
            state.display()
        );
        let mut child = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux)");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(answer.as_bytes()).expect("answer");
        }
        child.wait_with_output().expect("script")
    };

    let no = on_terminal("tty-1", "n\n");
    let shown = stdout(&no);
    assert!(!no.status.success(), "a no approved: {shown}");
    assert!(shown.contains("mixes Latin and Cyrillic"), "{shown}");
    assert!(shown.contains(&payload_sha256(&payload)), "{shown}");
    assert!(shown.contains("Approve exactly this payload"), "{shown}");
    assert!(
        vault
            .root()
            .join("Pending_Approval/email/tty-1.md")
            .is_file()
    );

    let yes = on_terminal("tty-2", "y\n");
    assert!(yes.status.success(), "{}", stdout(&yes));
    assert!(vault.root().join("Approved/tty-2.md").is_file());
    let ledger = std::fs::read_to_string(state.join("approvals.jsonl")).expect("ledger");
    assert!(
        ledger.contains(&payload_sha256(&payload)) && !ledger.contains("\"tty-1\""),
        "{ledger}"
    );
}

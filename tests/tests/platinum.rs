//! The Platinum gate with separate processes: `aie up --zone cloud` and `--zone local`
//! syncing through a bare git remote, the official Python MCP SDK as the cloud agent,
//! aiosmtpd receiving local's mail. An email arrives while local is offline; cloud drafts;
//! local comes up; the owner approves with `aie approvals approve`; local sends through MCP;
//! exactly one message arrives; the task is in `Done/`; `aie audit verify` passes.
//!
//! Mail reaches cloud from a real IMAP server (a private Debian dovecot over TLS, configured
//! in the cloud's `[email.imap]`), and, in a second run of the same gate, from a Maildir.

use std::path::{Path, PathBuf};

use aie_e2e::{
    approve_as_shown,
    dovecot::{self, Dovecot},
    zones::{SmtpSink, agent_call, agent_ok, aie, bare_remote, cloud_drafts, up},
};
use serde_json::json;

const MARKER: &str = "Paid on Monday. platinum-marker-5d1e";

const ORIGINAL: &str = "From: Alice <alice@example.org>\r\n\
To: Owner <owner@example.com>\r\n\
Subject: Invoice 42\r\n\
Message-ID: <inv42@example.org>\r\n\
References: <q0@example.com>\r\n\
\r\n\
Please pay invoice 42 by Friday.\r\n";

/// Writes the original mail into `maildir/new/`.
pub fn deliver(maildir: &Path) {
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    std::fs::write(maildir.join("new/1.platinum"), ORIGINAL).expect("deliver");
}

/// Writes the cloud zone's config file reading `dovecot` over TLS: the password in a file in
/// the cloud's state folder (the config refuses a literal one), the test CA as `ca_file`.
fn cloud_imap_config(root: &Path, dovecot: &Dovecot) -> PathBuf {
    let state = root.join("cloud/state");
    std::fs::create_dir_all(&state).expect("cloud state");
    std::fs::write(
        state.join("imap-password"),
        format!("{}\n", dovecot::PASSWORD),
    )
    .expect("password file");
    let config = root.join("cloud.toml");
    std::fs::write(
        &config,
        format!(
            "[email.imap]\nhost = \"localhost\"\nport = {port}\nuser = \"{user}\"\n\
             password_file = \"imap-password\"\nca_file = \"{ca}\"\n",
            port = dovecot.port,
            user = dovecot::USER,
            ca = dovecot.cert.display(),
        ),
    )
    .expect("cloud config");
    config
}

/// Mail reaches cloud from dovecot over IMAP/TLS.
#[test]
fn platinum_imap_email_arrives_offline_cloud_drafts_local_sends_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let dovecot = Dovecot::start();
    dovecot.deliver("1.platinum", ORIGINAL.as_bytes());
    let config = cloud_imap_config(root, &dovecot);
    let done = gate(root, &["--config", &config.display().to_string()]);
    assert!(
        done.contains("kind: imap"),
        "not read over IMAP: {done}\ndovecot's log:\n{}",
        dovecot.log()
    );
}

/// Mail reaches cloud through a Maildir (what mbsync or offlineimap leave).
#[test]
fn platinum_maildir_email_arrives_offline_cloud_drafts_local_sends_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let maildir = root.join("maildir");
    deliver(&maildir);
    let done = gate(root, &["--maildir", &maildir.display().to_string()]);
    assert!(
        done.contains("kind: maildir"),
        "not read from the Maildir: {done}"
    );
}

/// The gate, with `cloud_flags` telling the cloud where mail comes from: returns the task
/// file in local's `Done/`.
fn gate(root: &Path, cloud_flags: &[&str]) -> String {
    let remote = bare_remote(root);
    let sink = SmtpSink::start(root);

    let cloud = up("cloud", root, &remote, cloud_flags, &[]);
    let drafted = cloud_drafts(&cloud, MARKER);
    let refused = agent_call(
        &cloud.url,
        "email_send",
        &json!({"approval_id": drafted.approval_id}),
    );
    assert_eq!(refused["is_error"], true, "the cloud ran email_send");

    let smtp = sink.url();
    let local = up("local", root, &remote, &["--smtp", &smtp], &[]);
    let (vault, state) = (root.join("local/vault"), root.join("local/state"));
    let (vault_s, state_s) = (vault.display().to_string(), state.display().to_string());
    let approved = approve_as_shown(
        &drafted.approval_id,
        &["--vault", &vault_s, "--state", &state_s],
    );
    assert!(approved.status.success(), "aie approvals approve");

    let sent = agent_ok(
        &local.url,
        "email_send",
        &json!({"approval_id": drafted.approval_id}),
    );
    assert_eq!(sent["status"], "sent", "{sent}");
    let again = agent_call(
        &local.url,
        "email_send",
        &json!({"approval_id": drafted.approval_id}),
    );
    assert_eq!(
        again["is_error"], true,
        "a second send went through: {again}"
    );
    agent_ok(&local.url, "vault_sync", &json!({}));

    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "exactly one message: {messages:?}");
    let message = &messages[0];
    assert!(message.contains(MARKER), "{message}");
    assert!(message.contains("alice@example.org"), "{message}");
    assert!(message.contains("Subject: Re: Invoice 42"), "{message}");
    assert!(
        message.contains("In-Reply-To: <inv42@example.org>"),
        "{message}"
    );
    assert!(
        message.contains("<q0@example.com> <inv42@example.org>"),
        "{message}"
    );

    let done = vault.join("Done").join(format!("{}.md", drafted.task_id));
    assert!(done.is_file(), "{} is not in Done/", drafted.task_id);
    let verified = aie(&["audit", "verify", "--vault", &vault_s, "--state", &state_s]);
    assert!(verified.status.success(), "aie audit verify");
    drop((cloud, local));
    std::fs::read_to_string(done).expect("the done task")
}

//! IMAP intake against a real dovecot over TLS on 127.0.0.1: new mail becomes tasks; the
//! position (UIDVALIDITY, last UID) in the state folder makes restarts lose and double
//! nothing; a renumbered mailbox is read again without doubles; bad certificates, bad
//! passwords and oversized mail give clear answers.

mod support;

use aie_e2e::dovecot::Dovecot;
use aie_email_draft::{EmailConfig, ImapConfig, intake::imap};
use support::{Setup, mail};

/// The IMAP config for the test user, the password file written in the state folder.
fn imap_config(setup: &Setup, dovecot: &Dovecot, password: &str) -> EmailConfig {
    std::fs::create_dir_all(&setup.state).expect("state");
    std::fs::write(setup.state.join("imap-password"), format!("{password}\n")).expect("password");
    let mut config = EmailConfig::new(
        aie_shared::vault::AgentName::new("cloud").expect("agent"),
        &setup.state,
    );
    config.imap = Some(ImapConfig {
        host: "localhost".into(),
        port: dovecot.port,
        user: "test".into(),
        password_file: "imap-password".into(),
        mailbox: "INBOX".into(),
        tls: true,
        ca_file: Some(dovecot.cert.clone()),
    });
    config
}

fn deliver(dovecot: &Dovecot, range: std::ops::Range<usize>) {
    for i in range {
        dovecot.deliver(
            &format!("{i}.host"),
            &mail(
                Some(&format!("imap{i}@x.example")),
                "sender@x.example",
                &format!("IMAP mail {i}"),
                "Hello over IMAP",
            ),
        );
    }
}

/// Mail in the IMAP inbox becomes tasks; a second fetch takes nothing twice; a restarted
/// server takes exactly what arrived since; the server's flags are left untouched.
#[tokio::test]
async fn imap_intake_over_tls_survives_restarts() {
    let dovecot = Dovecot::start();
    let setup = Setup::new();
    deliver(&dovecot, 0..3);
    let config = imap_config(&setup, &dovecot, "secret");
    let server = setup.server(config.clone());
    let first = server
        .fetch()
        .await
        .unwrap_or_else(|e| panic!("fetch: {e}\n{}", dovecot.log()));
    assert_eq!(
        (first.report.new, first.report.duplicates),
        (3, 0),
        "{:?}",
        first.report
    );
    let again = server.fetch().await.expect("fetch again");
    assert_eq!((again.report.new, again.report.duplicates), (0, 0));

    deliver(&dovecot, 3..5);
    let restarted = setup.server(config.clone());
    let third = restarted.fetch().await.expect("fetch after restart");
    assert_eq!((third.report.new, third.report.duplicates), (2, 0));
    assert_eq!(setup.email_tasks().len(), 5);

    let position = imap::load_position(&imap::position_file(
        &setup.state,
        config.imap.as_ref().expect("imap"),
    ))
    .expect("position")
    .expect("saved");
    assert_eq!(position.last_uid, 5);
    assert!(position.uid_validity > 0);

    let task = std::fs::read_to_string(&setup.email_tasks()[0]).expect("task");
    assert!(task.contains("kind: imap"), "{task}");
    assert!(task.contains("uid_validity:"), "{task}");

    // EXAMINE and BODY.PEEK: dovecot still has every message unseen (nothing in cur/ with S).
    let seen = std::fs::read_dir(dovecot.maildir.join("cur"))
        .expect("cur")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().contains(",S"))
        })
        .count();
    assert_eq!(seen, 0);
}

/// A position lost in a crash (older than the tasks) re-reads messages whose tasks exist:
/// duplicates, no second task. A new UIDVALIDITY reads the mailbox again the same way.
#[tokio::test]
async fn imap_lost_position_and_new_uidvalidity_make_no_doubles() {
    let dovecot = Dovecot::start();
    let setup = Setup::new();
    deliver(&dovecot, 0..4);
    let config = imap_config(&setup, &dovecot, "secret");
    let account = config.imap.clone().expect("imap");
    let first = setup.server(config.clone()).fetch().await.expect("fetch");
    assert_eq!(first.report.new, 4);

    let path = imap::position_file(&setup.state, &account);
    let mut position = imap::load_position(&path).expect("load").expect("saved");
    position.last_uid = 1;
    std::fs::write(&path, serde_json::to_vec(&position).expect("json")).expect("rewind");
    let rewound = setup.server(config.clone()).fetch().await.expect("fetch");
    assert_eq!((rewound.report.new, rewound.report.duplicates), (0, 3));

    position.uid_validity += 1;
    position.last_uid = 4;
    std::fs::write(&path, serde_json::to_vec(&position).expect("json")).expect("renumber");
    let renumbered = setup.server(config).fetch().await.expect("fetch");
    assert_eq!(
        (renumbered.report.new, renumbered.report.duplicates),
        (0, 4)
    );
    assert_eq!(setup.email_tasks().len(), 4);
}

/// A message over the size limit is not downloaded: its header makes a rejection task.
#[tokio::test]
async fn imap_oversized_message_is_rejected_by_size() {
    let dovecot = Dovecot::start();
    let setup = Setup::new();
    let body = "x".repeat(200 * 1024);
    dovecot.deliver(
        "big.host",
        &mail(Some("bigimap@x.example"), "s@x.example", "Huge", &body),
    );
    let mut config = imap_config(&setup, &dovecot, "secret");
    config.max_message_bytes = 100 * 1024;
    let out = setup.server(config).fetch().await.expect("fetch");
    assert_eq!((out.report.new, out.report.rejected), (1, 1));
    let task = std::fs::read_to_string(&setup.email_tasks()[0]).expect("task");
    assert!(
        task.contains("over the intake limit of 100.0 KiB"),
        "{task}"
    );
    assert!(task.contains("subject: Huge"), "{task}");
}

/// A wrong password and an untrusted certificate are clear errors naming the server.
#[tokio::test]
async fn imap_bad_password_and_untrusted_certificate_are_clear() {
    let dovecot = Dovecot::start();
    let setup = Setup::new();
    let wrong = setup.server(imap_config(&setup, &dovecot, "wrong"));
    let err = wrong
        .fetch()
        .await
        .expect_err("login must fail")
        .to_string();
    assert!(
        err.contains(&format!("localhost:{}", dovecot.port)),
        "{err}"
    );
    assert!(err.contains("login as \"test\" refused"), "{err}");

    let mut untrusted = imap_config(&setup, &dovecot, "secret");
    if let Some(imap) = untrusted.imap.as_mut() {
        imap.ca_file = None;
    }
    let err = setup
        .server(untrusted)
        .fetch()
        .await
        .expect_err("TLS must fail")
        .to_string();
    assert!(err.contains("TLS handshake failed"), "{err}");
}

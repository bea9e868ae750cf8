//! Invariant 5 against the forms that once got through (issue 10, finding 7): a private key
//! saved as UTF-16LE, the same key base64-encoded, a PEM whose header line is wrapped,
//! `sk-ant-` and `sk-proj-` keys, `.env.local` and `.env.production`. Each is written into a
//! replica's vault, the replica syncs to a real bare remote, and plain `git` then reads the
//! remote: none of them is in its tree or in any object it holds, and each is reported in the
//! sync report's `blocked`. The key is a real one, made by `ssh-keygen` for the test; tokens
//! are built from pieces so no secret-looking literal sits in the repository.

mod sync_support;

use std::{collections::BTreeMap, fs, path::Path, process::Command};

use aie_vault_claim::sync::Zone;
use base64::Engine as _;
use sync_support::Net;

/// A fresh ECDSA private key in PEM (`-----BEGIN EC PRIVATE KEY-----`), made by `ssh-keygen`.
fn real_pem_key(dir: &Path) -> String {
    let key = dir.join("test-key");
    let out = Command::new("ssh-keygen")
        .args([
            "-q", "-t", "ecdsa", "-b", "256", "-m", "PEM", "-N", "", "-C", "test", "-f",
        ])
        .arg(&key)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = fs::read_to_string(&key).expect("read the key");
    fs::remove_file(&key).expect("remove the key");
    pem
}

/// Runs plain `git` on the bare remote and returns its standard output.
fn git(remote: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git")
        .arg("-C")
        .arg(remote)
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// UTF-16LE bytes of `text`, without a byte order mark.
fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Each of the issue's seven forms stays out of the remote (its tree and every object in it,
/// read with plain `git`) and is reported as blocked; ordinary notes beside them, one that
/// talks about tokens and one with a base64 image, do reach the remote.
#[test]
fn sync_secret_forms_from_the_issue_never_reach_the_remote() {
    let net = Net::new();
    let local = net.replica("local", Zone::Local);
    let root = local.vault().root().to_path_buf();

    let pem = real_pem_key(net.dir.path());
    let base64 = base64::engine::general_purpose::STANDARD;
    // As `base64 key.pem` writes it: 76 columns.
    let pem_base64: String = base64
        .encode(pem.as_bytes())
        .as_bytes()
        .chunks(76)
        .map(|line| String::from_utf8_lossy(line) + "\n")
        .collect();
    let label = ["PRIV", "ATE KEY-----"].concat();
    assert!(pem.contains(&label), "ssh-keygen wrote {pem:.40}");
    let wrapped = pem.replacen(&[" ", &label].concat(), &["\n", &label].concat(), 1);
    let anthropic = ["sk", "-ant-api03-", &"Qx7_-".repeat(18), "AAAAA"].concat();
    let openai = ["sk", "-proj-", &"Z9y8X7w6".repeat(20)].concat();
    let env_marker = ["canary-", "env-", "4e1d"].concat();
    let forms: BTreeMap<&str, Vec<u8>> = BTreeMap::from([
        ("Plans/email/key-utf16.txt", utf16le(&pem)),
        (
            "Plans/email/key-base64.txt",
            pem_base64.clone().into_bytes(),
        ),
        (
            "Plans/email/key-wrapped.md",
            format!("# Server\n\n{wrapped}").into_bytes(),
        ),
        (
            "Plans/email/anthropic.md",
            format!("# Agent set-up\n\nANTHROPIC_API_KEY={anthropic}\n").into_bytes(),
        ),
        (
            "Plans/email/openai.md",
            format!("Use this key: {openai}\n").into_bytes(),
        ),
        (".env.local", format!("DEBUG={env_marker}\n").into_bytes()),
        (
            ".env.production",
            format!("MODE={env_marker}\n").into_bytes(),
        ),
    ]);
    for (path, bytes) in &forms {
        fs::write(root.join(path), bytes).expect("write a form");
    }
    let talk = "# Tokens\n\nThe session token expires on Friday; rotate the API key then.\n";
    let image = format!(
        "# Plan\n\n![plan](data:image/png;base64,{})\n",
        base64.encode(
            (0..20_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
                .collect::<Vec<_>>()
        )
    );
    fs::write(root.join("Plans/email/talk.md"), talk).expect("talk");
    fs::write(root.join("Plans/email/image.md"), &image).expect("image");

    let report = local.sync().expect("sync");
    assert!(report.offline.is_none(), "{report:?}");
    let blocked: BTreeMap<&str, &str> = report
        .blocked
        .iter()
        .map(|b| (b.path.as_str(), b.reason.as_str()))
        .collect();
    assert_eq!(
        blocked.keys().copied().collect::<Vec<_>>(),
        forms.keys().copied().collect::<Vec<_>>(),
        "{blocked:#?}"
    );
    for (path, expected) in [
        ("Plans/email/key-utf16.txt", "UTF-16LE"),
        ("Plans/email/key-base64.txt", "base64"),
        ("Plans/email/key-wrapped.md", "private key"),
        ("Plans/email/anthropic.md", "Anthropic"),
        ("Plans/email/openai.md", "OpenAI"),
        (".env.local", ".env.*"),
        (".env.production", ".env.*"),
    ] {
        assert!(
            blocked[path].contains(expected),
            "{path}: {}",
            blocked[path]
        );
    }

    // The remote, read with plain git: the tree has the ordinary notes and no form...
    let remote = net.remote.as_path();
    let tree = String::from_utf8(git(remote, &["ls-tree", "-r", "--name-only", "main"]))
        .expect("utf-8 names");
    let names: Vec<&str> = tree.lines().collect();
    assert!(names.contains(&"Plans/email/talk.md"), "{names:?}");
    assert!(names.contains(&"Plans/email/image.md"), "{names:?}");
    for path in forms.keys() {
        assert!(!names.contains(path), "{path} reached the remote");
    }
    // ...and no object it holds, reachable or not, carries any form's content.
    let objects = git(remote, &["cat-file", "--batch-all-objects", "--batch"]);
    let pem_line = pem.lines().nth(2).expect("a body line of the key");
    let canaries: Vec<(&str, Vec<u8>)> = vec![
        ("key body", pem_line.as_bytes().to_vec()),
        ("key body in UTF-16LE", utf16le(pem_line)),
        (
            "key in base64",
            pem_base64.lines().nth(1).expect("line").as_bytes().to_vec(),
        ),
        ("Anthropic key", anthropic.clone().into_bytes()),
        ("OpenAI key", openai.clone().into_bytes()),
        (".env content", env_marker.clone().into_bytes()),
    ];
    for (what, canary) in &canaries {
        assert!(!contains(&objects, canary), "the remote holds the {what}");
    }
    assert!(
        contains(&objects, talk.as_bytes()),
        "ordinary notes do sync"
    );

    // Every form is still on disk, untouched.
    for (path, bytes) in &forms {
        assert_eq!(
            &fs::read(root.join(path)).expect("still on disk"),
            bytes,
            "{path}"
        );
    }
}

//! The content rules: every key and token shape the filter knows, in one table, matched in
//! one linear-time pass (a `regex` set).
//!
//! # Why a hand list
//!
//! A maintained detector's rule set was preferred where one could be embedded; none fits:
//! - gitleaks' `config/gitleaks.toml` (MIT), the usual reference, is Go RE2 data, not a crate;
//!   many of its rules carry keyword lists and entropy thresholds that a plain regex set does
//!   not apply, its generic rules fire on ordinary prose and hashes, and vendoring it would
//!   mean tracking its upstream by hand;
//! - `keyspoor` (Apache-2.0) ships gitleaks' rules transformed to JSON, but is a 0.1 crate
//!   that needs Rust 1.96 (this workspace builds with 1.88 and up);
//! - `keyhog-scanner` needs Rust 1.89 and defaults to GPU, ML and Hyperscan back ends, far
//!   more than a per-file check in the sync path should pull in;
//! - `keyhunter` is GPL-3.0, whose terms would extend to this Apache-2.0 suite; `ripsecrets`
//!   and `secretscout` are command-line tools, not libraries with a rule set.
//!
//! So this is a hand list, kept to shapes with a fixed, distinctive prefix (no entropy
//! guessing, so ordinary notes, hashes and images never match), with the prefixes the
//! providers document for their keys. Add a provider here, with a positive and a negative
//! case in the tests below.

use std::sync::LazyLock;

use regex::bytes::{RegexSet, RegexSetBuilder};

/// One content rule: what it finds, as the report says it, and its pattern.
pub(super) struct ContentRule {
    /// What a match is, with its article ("a GitHub token").
    pub(super) what: &'static str,
    /// The pattern, over bytes, ASCII classes only; `~` stands for [`GAP`].
    pattern: &'static str,
}

/// What `~` in a pattern stands for: any run of whitespace, line breaks included, or of JSON
/// `\n`/`\r` escapes. A PEM header is matched with a gap allowed between every two letters,
/// so a header wrapped anywhere (even inside a word), spaced out, or written with CRLF is
/// still a header.
const GAP: &str = r"(?:\s|\\[nr])*";

/// The rules, in the order their findings are named when several match.
///
/// Prefixes that only a token has (`sk-ant-`, `ghp_`, `xoxb-`) match anywhere; short
/// alphanumeric ones (`AKIA`, `AIza`, `EAA`, `eyJ`) only as a whole word, and the two that
/// are mostly letters and digits (`AIza`, `EAA`) not inside a base64 run either (no `+` or
/// `/` on either side), so an image pasted into a note as base64 never matches by chance.
pub(super) const CONTENT_RULES: &[ContentRule] = &[
    ContentRule {
        what: "a PEM private key block",
        // A dash, then BEGIN, a short label (`RSA `, `OPENSSH `, `SSH2 ENCRYPTED `, `PGP `),
        // then PRIVATE KEY: the header of every private key PEM kind.
        pattern: r"-[\s-]*B~E~G~I~N[A-Z0-9\s]{1,40}P~R~I~V~A~T~E~K~E~Y",
    },
    ContentRule {
        what: "an OpenSSH private key",
        // The binary key's magic, as a base64 body decodes to.
        pattern: r"openssh-key-v1\x00",
    },
    ContentRule {
        what: "a PuTTY private key",
        pattern: r"PuTTY-User-Key-File-[0-9]+:",
    },
    ContentRule {
        what: "an Anthropic API key",
        pattern: r"sk-ant-[A-Za-z0-9_-]{20,}",
    },
    ContentRule {
        what: "an OpenAI API key",
        // Project, service account and admin keys; the older user keys carry `T3BlbkFJ`.
        pattern: r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|\bsk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}\b",
    },
    ContentRule {
        what: "a Stripe secret key",
        pattern: r"[rs]k_(?:live|test)_[A-Za-z0-9]{10,}",
    },
    ContentRule {
        what: "a GitHub token",
        pattern: r"gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}",
    },
    ContentRule {
        what: "a GitLab token",
        pattern: r"glpat-[A-Za-z0-9_-]{20,}",
    },
    ContentRule {
        what: "a Slack token",
        // `xox?-` but not `xoxo-`, which is hugs and kisses; app tokens; webhook URLs.
        pattern: r"xox[a-np-z]-[A-Za-z0-9-]{10,}|xapp-[0-9]-[A-Za-z0-9-]{10,}|hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]{16,}",
    },
    ContentRule {
        what: "an AWS access key id",
        pattern: r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
    },
    ContentRule {
        what: "a Google API key",
        pattern: r"(?m:^|[^A-Za-z0-9_+/-])AIza[A-Za-z0-9_-]{35}(?m:$|[^A-Za-z0-9_+/=-])",
    },
    ContentRule {
        what: "a Google OAuth secret",
        pattern: r"GOCSPX-[A-Za-z0-9_-]{28}|\bya29\.[A-Za-z0-9_-]{30,}",
    },
    ContentRule {
        what: "a Meta (WhatsApp, Facebook, Instagram) access token",
        pattern: r"(?m:^|[^A-Za-z0-9+/])EAA[A-Za-z0-9]{100,}(?m:$|[^A-Za-z0-9+/=])",
    },
    ContentRule {
        what: "a JSON Web Token",
        // Header and payload are base64url JSON objects (`{"` encodes as `eyJ`).
        pattern: r"\beyJ[A-Za-z0-9_-]{7,}\.eyJ[A-Za-z0-9_-]{7,}\.",
    },
    ContentRule {
        what: "a Hugging Face token",
        pattern: r"\bhf_[A-Za-z0-9]{34,}\b",
    },
    ContentRule {
        what: "an npm token",
        pattern: r"\bnpm_[A-Za-z0-9]{36}\b",
    },
    ContentRule {
        what: "a PyPI token",
        pattern: r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",
    },
    ContentRule {
        what: "a SendGrid API key",
        pattern: r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b",
    },
];

/// Every rule compiled into one set, once per process.
static RULE_SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSetBuilder::new(CONTENT_RULES.iter().map(|r| r.pattern.replace('~', GAP)))
        // ASCII classes over bytes: files are scanned as they are, whatever their encoding.
        .unicode(false)
        .build()
        .expect("the content rules are fixed and valid (sync_secret_rules_compile)")
});

/// The first rule (in table order) whose pattern occurs in `bytes`: one pass over them.
pub(super) fn first_match(bytes: &[u8]) -> Option<&'static str> {
    let set = &*RULE_SET;
    if !set.is_match(bytes) {
        return None;
    }
    let first = set.matches(bytes).iter().next()?;
    Some(CONTENT_RULES[first].what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a sample from pieces, so no secret-looking literal sits in the repository.
    fn sample(parts: &[&str]) -> Vec<u8> {
        parts.concat().into_bytes()
    }

    /// Every pattern compiles (the set is built once, so a typo would panic every sync).
    #[test]
    fn sync_secret_rules_compile() {
        assert_eq!(RULE_SET.len(), CONTENT_RULES.len());
    }

    /// Each provider's token shape is found inside ordinary text and named.
    #[test]
    fn sync_secret_token_formats_found() {
        let cases: &[(Vec<u8>, &str)] = &[
            (
                sample(&["key: sk", "-ant-api03-", &"Ab9_-".repeat(20), "\n"]),
                "Anthropic",
            ),
            (
                sample(&["OPENAI=sk", "-proj-", &"x7Y_".repeat(12)]),
                "OpenAI",
            ),
            (
                sample(&["sk", "-", &"a".repeat(20), "T3Blbk", "FJ", &"b".repeat(20)]),
                "OpenAI",
            ),
            (sample(&["sk", "_live_", "abcdefghij1234"]), "Stripe"),
            (sample(&["rk", "_live_", "abcdefghij1234"]), "Stripe"),
            (sample(&["gh", "p_", &"a1".repeat(18)]), "GitHub"),
            (sample(&["gh", "o_", &"a1".repeat(18)]), "GitHub"),
            (sample(&["github", "_pat_", &"B2".repeat(12)]), "GitHub"),
            (sample(&["gl", "pat-", &"q".repeat(20)]), "GitLab"),
            (sample(&["xo", "xb-", "1234567890-abc"]), "Slack"),
            (sample(&["xo", "xp-", "1234567890-abc"]), "Slack"),
            (
                sample(&[
                    "https://hooks.",
                    "slack.com/services/T0/B1/",
                    &"z".repeat(24),
                ]),
                "Slack",
            ),
            (sample(&["key = AK", "IAABCDEFGHIJKLMNOP\n"]), "AWS"),
            (sample(&["AS", "IAABCDEFGHIJKLMNOP"]), "AWS"),
            (sample(&["\"AI", "za", &"x".repeat(35), "\""]), "Google API"),
            (sample(&["GOC", "SPX-", &"k".repeat(28)]), "Google OAuth"),
            (sample(&["token=EA", "AG", &"w9".repeat(60), "\n"]), "Meta"),
            (
                sample(&[
                    "Bearer ey",
                    "JhbGciOiJIUzI1NiJ9.",
                    "ey",
                    "JzdWIiOiIxMjM0NSJ9.sig",
                ]),
                "JSON Web Token",
            ),
            (sample(&["h", "f_", &"m".repeat(34)]), "Hugging Face"),
            (sample(&["np", "m_", &"n".repeat(36)]), "npm"),
            (
                sample(&["py", "pi-AgEIcHlwaS5vcmc", &"p".repeat(60)]),
                "PyPI",
            ),
            (
                sample(&["S", "G.", &"s".repeat(22), ".", &"t".repeat(43)]),
                "SendGrid",
            ),
            (
                sample(&["PuTTY-User-", "Key-File-3: ssh-ed25519\n"]),
                "PuTTY",
            ),
            (
                sample(&["x", "openssh-key-", "v1\0\0\0\0\x04none"]),
                "OpenSSH",
            ),
        ];
        for (text, provider) in cases {
            let what = first_match(text);
            assert!(
                what.is_some_and(|w| w.contains(provider)),
                "{provider}: {what:?} for {}",
                String::from_utf8_lossy(text)
            );
        }
    }

    /// Near misses and ordinary text: prose about tokens, short or embedded prefixes, hashes,
    /// the `AIza` and `EAA` prefixes inside a base64 run, and `xoxo`.
    #[test]
    fn sync_secret_token_near_misses_pass() {
        let misses = [
            sample(&["A plain note about AKIA, sk-ant- keys and tokens.\n"]),
            sample(&["-----\nnot a key\n"]),
            sample(&["To begin, paste your private key into the form.\n"]),
            sample(&["gh", "p_short"]),
            sample(&["xAK", "IAABCDEFGHIJKLMNOP"]),
            sample(&["eyJust a word. eyJ again."]),
            sample(&["xo", "xo-grandma-love-you"]),
            sample(&["sk", "-ant-short"]),
            sample(&["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]),
            sample(&["iVBORw0KGgo+AI", "za", &"x".repeat(35), "+AAAA"]),
            sample(&["iVBORw0KGgo/EA", "AG", &"w9".repeat(60), "/AAAA"]),
        ];
        for miss in &misses {
            assert_eq!(first_match(miss), None, "{}", String::from_utf8_lossy(miss));
        }
    }
}

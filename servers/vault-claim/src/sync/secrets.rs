//! What counts as a secret (contract invariant 5): file names the contract keeps out of
//! commits, and contents shaped like keys and tokens.
//!
//! Both checks run on every file before it is staged, whatever `.gitignore` says, so a
//! secret stays out of the commit even when someone edited `.gitignore`. They err on the side
//! of blocking: names match without regard to case, and any file whose bytes contain a
//! key-shaped string is held back whole.

/// Name patterns that mark a file as a secret, matched against every path component in
/// lower case: (what the component contains or is, the reason reported).
const NAME_RULES: &[(NameRule, &str)] = &[
    (NameRule::Is(".env"), "`.env` file"),
    (NameRule::EndsWith(".env"), "`*.env` file"),
    (
        NameRule::Contains("credentials"),
        "name matches `*credentials*`",
    ),
    (NameRule::Contains("token"), "name matches `*token*`"),
    (NameRule::Contains("session"), "name matches `*session*`"),
    (NameRule::EndsWith(".pem"), "key file (`*.pem`)"),
    (NameRule::EndsWith(".key"), "key file (`*.key`)"),
    (NameRule::StartsWith("id_rsa"), "ssh key file (`id_rsa*`)"),
    (
        NameRule::StartsWith("id_ed25519"),
        "ssh key file (`id_ed25519*`)",
    ),
    (
        NameRule::StartsWith("id_ecdsa"),
        "ssh key file (`id_ecdsa*`)",
    ),
];

/// How a name rule matches one path component.
enum NameRule {
    /// The whole component.
    Is(&'static str),
    /// A suffix.
    EndsWith(&'static str),
    /// A prefix.
    StartsWith(&'static str),
    /// Anywhere.
    Contains(&'static str),
}

impl NameRule {
    /// Whether `component` (already lower-cased) matches.
    fn matches(&self, component: &str) -> bool {
        match self {
            NameRule::Is(s) => component == *s,
            NameRule::EndsWith(s) => component.ends_with(s),
            NameRule::StartsWith(s) => component.starts_with(s),
            NameRule::Contains(s) => component.contains(s),
        }
    }
}

/// Why a vault-relative path (with `/` separators) may never be committed, or `None`.
///
/// Covers the contract's `.env`, `*credentials*`, `*token*`, `*session*` and `secrets/`, and
/// key files (`*.pem`, `*.key`, `id_rsa*`), like the `.gitignore` that `init` writes.
pub fn secret_name_reason(path: &str) -> Option<String> {
    let components: Vec<String> = path.split('/').map(str::to_ascii_lowercase).collect();
    let (file, dirs) = components.split_last()?;
    if dirs.iter().any(|d| d == "secrets") {
        return Some("inside a `secrets/` folder".to_owned());
    }
    for component in dirs.iter().chain(std::iter::once(file)) {
        if let Some((_, reason)) = NAME_RULES.iter().find(|(rule, _)| rule.matches(component)) {
            return Some((*reason).to_owned());
        }
    }
    None
}

/// Why these bytes look like they hold a secret, or `None`.
///
/// Looks for a PEM private key block (any kind, OpenSSH included) and the common token
/// shapes: AWS access key ids, GitHub tokens, Slack tokens, Stripe live keys, Google API
/// keys and JSON Web Tokens. One linear pass; each candidate is checked only where its first
/// byte appears at a word boundary.
pub fn secret_content_reason(bytes: &[u8]) -> Option<&'static str> {
    for (i, &byte) in bytes.iter().enumerate() {
        let rest = &bytes[i..];
        // Token prefixes inside a longer word (`xAKIA...`) are not tokens.
        let boundary = i == 0 || !is_word(bytes[i - 1]);
        let found = match byte {
            b'-' => private_key_block(rest).then_some("a PEM private key block"),
            b'A' if boundary => aws_key_id(rest)
                .then_some("an AWS access key id")
                .or_else(|| google_key(rest).then_some("a Google API key")),
            b'g' if boundary => github_token(rest).then_some("a GitHub token"),
            b'x' if boundary => slack_token(rest).then_some("a Slack token"),
            b's' | b'r' if boundary => stripe_key(rest).then_some("a Stripe live key"),
            b'e' if boundary => jwt(rest).then_some("a JSON Web Token"),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Letters, digits and `_`: what a token is made of.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// How many leading bytes of `bytes` satisfy `pred`.
fn run(bytes: &[u8], pred: impl Fn(u8) -> bool) -> usize {
    bytes.iter().take_while(|&&b| pred(b)).count()
}

/// `bytes` after `prefix`, if it starts with it.
fn after<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    bytes.strip_prefix(prefix)
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A PEM header line whose label names a private key (RSA, EC, OpenSSH, PGP, encrypted...).
fn private_key_block(rest: &[u8]) -> bool {
    // Split so that this source file never holds a whole key header itself.
    const DASHES: &[u8] = b"-----";
    const BEGIN: &[u8] = b"BEGIN ";
    let Some(label) = after(rest, DASHES).and_then(|r| after(r, BEGIN)) else {
        return false;
    };
    let line = &label[..label
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(label.len())];
    contains(line, b"PRIVATE KEY") && contains(line, DASHES)
}

/// `AKIA` or `ASIA` then 16 upper-case letters or digits, and no more.
fn aws_key_id(rest: &[u8]) -> bool {
    let Some(tail) = after(rest, b"AKIA").or_else(|| after(rest, b"ASIA")) else {
        return false;
    };
    run(tail, |b| b.is_ascii_uppercase() || b.is_ascii_digit()) == 16
        && tail.get(16).is_none_or(|&b| !is_word(b))
}

/// `AIza` then 35 of `[A-Za-z0-9_-]`.
fn google_key(rest: &[u8]) -> bool {
    after(rest, b"AIza").is_some_and(|tail| run(tail, |b| is_word(b) || b == b'-') >= 35)
}

/// `gh[pousr]_` then 36 or more letters and digits, or `github_pat_` then 22 or more.
fn github_token(rest: &[u8]) -> bool {
    if let Some(tail) = after(rest, b"github_pat_") {
        return run(tail, is_word) >= 22;
    }
    match rest {
        [b'g', b'h', kind, b'_', tail @ ..] if b"pousr".contains(kind) => {
            run(tail, |b| b.is_ascii_alphanumeric()) >= 36
        }
        _ => false,
    }
}

/// `xox[abprs]-` then at least 10 of `[A-Za-z0-9-]`.
fn slack_token(rest: &[u8]) -> bool {
    match rest {
        [b'x', b'o', b'x', kind, b'-', tail @ ..] if b"abprs".contains(kind) => {
            run(tail, |b| b.is_ascii_alphanumeric() || b == b'-') >= 10
        }
        _ => false,
    }
}

/// `sk_live_` or `rk_live_` then at least 10 letters and digits.
fn stripe_key(rest: &[u8]) -> bool {
    after(rest, b"sk_live_")
        .or_else(|| after(rest, b"rk_live_"))
        .is_some_and(|tail| run(tail, |b| b.is_ascii_alphanumeric()) >= 10)
}

/// Two base64url segments that each decode to JSON (`eyJ`), then a signature segment.
fn jwt(rest: &[u8]) -> bool {
    let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let segment = |bytes: &[u8]| -> Option<usize> {
        let len = run(bytes, b64);
        (bytes.starts_with(b"eyJ") && len >= 10).then_some(len)
    };
    let Some(header) = segment(rest) else {
        return false;
    };
    let Some(payload_start) = rest.get(header + 1..).filter(|_| rest[header] == b'.') else {
        return false;
    };
    let Some(payload) = segment(payload_start) else {
        return false;
    };
    payload_start.get(payload) == Some(&b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a canary from pieces, so no secret-looking literal sits in the repository.
    fn canary(parts: &[&str]) -> Vec<u8> {
        parts.concat().into_bytes()
    }

    /// The contract's name patterns are blocked in any component, whatever the case.
    #[test]
    fn sync_secret_names_blocked() {
        for path in [
            ".env",
            "Plans/prod.env",
            "secrets/x",
            "a/Secrets/b/c.md",
            "api_token.txt",
            "Notes/AWS_Credentials.md",
            "whatsapp-session/data.json",
            "keys/server.pem",
            "id_rsa.pub",
        ] {
            assert!(secret_name_reason(path).is_some(), "{path}");
        }
        for path in [
            "Needs_Action/email/t1.md",
            "Dashboard.md",
            ".gitignore",
            "envelope.md",
        ] {
            assert_eq!(secret_name_reason(path), None, "{path}");
        }
    }

    /// Every token shape is found inside ordinary text, and ordinary text is left alone.
    #[test]
    fn sync_secret_content_found() {
        let hits = [
            canary(&["note\n-----", "BEGIN OPENSSH PRIV", "ATE KEY-----\nabc\n"]),
            canary(&["-----", "BEGIN RSA PRIV", "ATE KEY-----"]),
            canary(&["key = AK", "IAABCDEFGHIJKLMNOP\n"]),
            canary(&["gh", "p_", &"a1".repeat(18)]),
            canary(&["github", "_pat_", &"B2".repeat(12)]),
            canary(&["xo", "xb-", "1234567890-abc"]),
            canary(&["sk", "_live_", "abcdefghij1234"]),
            canary(&["AI", "za", &"x".repeat(35)]),
            canary(&["ey", "JhbGciOiJIUzI1NiJ9.", "ey", "JzdWIiOiIxMjM0NSJ9.sig"]),
        ];
        for hit in &hits {
            assert!(
                secret_content_reason(hit).is_some(),
                "{}",
                String::from_utf8_lossy(hit)
            );
        }
        let misses = [
            canary(&["A plain note about AKIA and tokens.\n"]),
            canary(&["-----\nnot a key\n"]),
            canary(&["gh", "p_short"]),
            canary(&["xAK", "IAABCDEFGHIJKLMNOP"]),
            canary(&["eyJust a word. eyJ again."]),
        ];
        for miss in &misses {
            assert_eq!(
                secret_content_reason(miss),
                None,
                "{}",
                String::from_utf8_lossy(miss)
            );
        }
    }
}

//! What counts as a secret (contract invariant 5): file names the contract keeps out of
//! commits, and contents shaped like keys and tokens, in whatever encoding they were saved.
//!
//! Both checks run on every file before it is staged, whatever `.gitignore` says, so a
//! secret stays out of the commit even when someone edited `.gitignore`. They err on the side
//! of blocking: names match without regard to case, and any file whose bytes hold key-shaped
//! content, as they are or once decoded, is held back whole.
//!
//! Layout:
//! - this file: the name rules ([`secret_name_reason`]) and the content scan
//!   ([`secret_content_reason`]), which looks at the bytes as they are, then again under
//!   each encoding they may be in;
//! - `rules` (private): the one table of key and token shapes, and why it is a hand list;
//! - `decode` (private): UTF-16 and base64 undone, and DER private keys recognised.
//!
//! The cost is linear in the file: one pass of all rules at once (a `regex` set), a UTF-16
//! decode only for bytes that look like UTF-16, and a base64 decode only of runs of
//! plausible length, at most two encodings deep.

mod decode;
mod rules;

use std::fmt;

pub use decode::Encoding;

/// Name patterns that mark a file as a secret, matched against every path component in
/// lower case: (what the component contains or is, the reason reported).
const NAME_RULES: &[(NameRule, &str)] = &[
    (NameRule::Is(".env"), "`.env` file"),
    (NameRule::StartsWith(".env."), "`.env.*` file"),
    (NameRule::StartsWith(".env-"), "`.env.*` file"),
    (NameRule::StartsWith(".env_"), "`.env.*` file"),
    (NameRule::Is(".envrc"), "`.envrc` file (direnv exports)"),
    (NameRule::EndsWith(".env"), "`*.env` file"),
    (
        NameRule::Contains("credentials"),
        "name matches `*credentials*`",
    ),
    (NameRule::Contains("token"), "name matches `*token*`"),
    (NameRule::Contains("session"), "name matches `*session*`"),
    (NameRule::EndsWith(".pem"), "key file (`*.pem`)"),
    (NameRule::EndsWith(".key"), "key file (`*.key`)"),
    (NameRule::EndsWith(".ppk"), "PuTTY key file (`*.ppk`)"),
    (NameRule::EndsWith(".p12"), "key store (`*.p12`)"),
    (NameRule::EndsWith(".pfx"), "key store (`*.pfx`)"),
    (NameRule::EndsWith(".jks"), "key store (`*.jks`)"),
    (NameRule::EndsWith(".keystore"), "key store (`*.keystore`)"),
    (NameRule::StartsWith("id_rsa"), "ssh key file (`id_rsa*`)"),
    (NameRule::StartsWith("id_dsa"), "ssh key file (`id_dsa*`)"),
    (
        NameRule::StartsWith("id_ed25519"),
        "ssh key file (`id_ed25519*`)",
    ),
    (
        NameRule::StartsWith("id_ecdsa"),
        "ssh key file (`id_ecdsa*`)",
    ),
    (NameRule::Is(".netrc"), "password file (`.netrc`)"),
    (NameRule::Is("_netrc"), "password file (`_netrc`)"),
    (NameRule::Is(".pgpass"), "password file (`.pgpass`)"),
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
/// Covers the contract's `.env` and `.env.*`, `*credentials*`, `*token*`, `*session*` and
/// `secrets/`, plus `*.env`, key files and key stores (`*.pem`, `*.key`, `id_rsa*`, `*.p12`...)
/// and password files (`.netrc`, `.pgpass`), in any case.
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

/// What the content scan found: the kind of secret, and the encodings it was under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFinding {
    /// What was found, with its article ("a GitHub token").
    pub what: &'static str,
    /// The encodings undone to find it, outermost first; empty when it was in plain sight.
    pub under: Vec<Encoding>,
}

impl fmt::Display for SecretFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)?;
        for (i, encoding) in self.under.iter().enumerate() {
            let joint = if i == 0 {
                " (after decoding "
            } else {
                ", then "
            };
            write!(f, "{joint}{encoding}")?;
        }
        if !self.under.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// How many encodings deep the scan looks: base64 inside UTF-16 text, or base64 twice.
const MAX_DEPTH: usize = 2;

/// What a DER private key is called in a finding.
const DER_PRIVATE_KEY: &str = "a DER private key";

/// Why these bytes look like they hold a secret, or `None`.
///
/// Looks for PEM private key blocks however wrapped, key and token shapes (the table in
/// `rules`), and DER or OpenSSH key material; in the bytes as they are, in the text they
/// hold if they look like UTF-16 (either byte order, with or without a byte order mark), and
/// in what their base64 runs decode to, up to two encodings deep.
pub fn secret_content_reason(bytes: &[u8]) -> Option<SecretFinding> {
    scan(bytes, &mut Vec::new())
}

/// Scans `bytes`, found under the encodings `under`, and what they decode to.
fn scan(bytes: &[u8], under: &mut Vec<Encoding>) -> Option<SecretFinding> {
    let what = rules::first_match(bytes)
        .or_else(|| decode::der_private_key(bytes).then_some(DER_PRIVATE_KEY));
    if let Some(what) = what {
        return Some(SecretFinding {
            what,
            under: under.clone(),
        });
    }
    if under.len() >= MAX_DEPTH {
        return None;
    }
    let utf16 = decode::utf16_texts(bytes)
        .into_iter()
        .map(|(encoding, text)| (encoding, text.into_bytes()));
    let base64 = decode::base64_runs(bytes).map(|decoded| (Encoding::Base64, decoded));
    for (encoding, decoded) in utf16.chain(base64) {
        under.push(encoding);
        let finding = scan(&decoded, under);
        under.pop();
        if finding.is_some() {
            return finding;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    /// Builds a sample from pieces, so no secret-looking literal sits in the repository.
    fn sample(parts: &[&str]) -> Vec<u8> {
        parts.concat().into_bytes()
    }

    /// `-----BEGIN {label}-----`, from pieces.
    fn header(label: &str) -> String {
        ["-----", "BEG", "IN ", label, "-----"].concat()
    }

    /// The DER of a stand-in PKCS#1 RSA private key (real opening, filler body).
    fn rsa_der() -> Vec<u8> {
        let mut der = vec![
            0x30, 0x82, 0x04, 0xA2, 0x02, 0x01, 0x00, 0x02, 0x82, 0x01, 0x01,
        ];
        der.extend((0..1190u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        der
    }

    /// A PEM file as openssl writes it: header, base64 body in 64-column lines, footer.
    fn pem_file(eol: &str) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(rsa_der());
        let mut pem = header(&["RSA PRIV", "ATE KEY"].concat()) + eol;
        for line in body.as_bytes().chunks(64) {
            pem += &String::from_utf8_lossy(line);
            pem += eol;
        }
        pem + &["-----", "END RSA PRIV", "ATE KEY-----"].concat() + eol
    }

    /// UTF-16 bytes of `text`, with or without a byte order mark.
    fn utf16(text: &str, little_endian: bool, bom: bool) -> Vec<u8> {
        let units = bom.then_some(0xFEFF).into_iter().chain(text.encode_utf16());
        units
            .flat_map(|u| {
                if little_endian {
                    u.to_le_bytes()
                } else {
                    u.to_be_bytes()
                }
            })
            .collect()
    }

    /// What the scan says about `bytes`, as the report would word it.
    fn reason(bytes: &[u8]) -> Option<String> {
        secret_content_reason(bytes).map(|f| f.to_string())
    }

    /// The contract's name patterns are blocked in any component, whatever the case.
    #[test]
    fn sync_secret_names_blocked() {
        for path in [
            ".env",
            ".env.local",
            ".env.production",
            "Config/.ENV.Staging",
            ".env-backup",
            "Plans/prod.env",
            "Plans/PROD.ENV",
            "secrets/x",
            "a/Secrets/b/c.md",
            "SECRETS/notes.md",
            "api_token.txt",
            "Notes/My-TOKEN-list.md",
            "Notes/AWS_Credentials.md",
            ".git-credentials",
            "whatsapp-session/data.json",
            "Browser Session.json",
            "keys/server.pem",
            "id_rsa.pub",
            "ID_ED25519",
            "certs/client.P12",
            "putty/host.ppk",
            ".netrc",
        ] {
            assert!(secret_name_reason(path).is_some(), "{path}");
        }
        for path in [
            "Needs_Action/email/t1.md",
            "Dashboard.md",
            ".gitignore",
            "envelope.md",
            ".environment-notes.md",
            "Plans/environment.md",
            "secretsanta.md",
            "Notes/my secrets.md",
        ] {
            assert_eq!(secret_name_reason(path), None, "{path}");
        }
    }

    /// A PEM private key block is found however it is wrapped, spaced, or line-ended, and
    /// whatever its kind.
    #[test]
    fn sync_secret_pem_blocks_found_however_wrapped() {
        let private = ["PRIV", "ATE KEY"].concat();
        let hits = [
            pem_file("\n"),
            pem_file("\r\n"),
            header(&["OPENSSH ", &private].concat()) + "\nb3Blbg==\n",
            header(&["EC ", &private].concat()),
            header(&private),
            header(&["ENCRYPTED ", &private].concat()),
            header(&["PGP ", &private, " BLOCK"].concat()),
            ["---- ", "BEG", "IN SSH2 ENCRYPTED ", &private, " ----"].concat(),
            // The header wrapped onto a second line, mid-word and between words.
            ["-----", "BEG", "IN RSA PRIV\nATE KEY-----\nabc\n"].concat(),
            ["-----", "BEG", "IN OPENSSH\r\n", &private, "-----\r\n"].concat(),
            ["-----\n", "BEG", "IN RSA ", &private, "-----"].concat(),
            // Extra spaces, and a JSON string's escaped line breaks.
            ["-----  ", "BEG", "IN   RSA  PRIV", "ATE   KEY  -----"].concat(),
            [
                r#"{"private_key": "-----"#,
                "BEG",
                r"IN ",
                &private,
                r#"-----\nMIIE\n"}"#,
            ]
            .concat(),
        ];
        for hit in &hits {
            let found = reason(hit.as_bytes());
            assert!(
                found.as_deref().is_some_and(|r| r.contains("private key")),
                "{found:?} for {hit:?}"
            );
        }
        // No header at all: the body alone is DER key material.
        let body_only: String = pem_file("\n")
            .lines()
            .filter(|l| !l.contains("--"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            reason(body_only.as_bytes()).as_deref(),
            Some("a DER private key (after decoding base64)")
        );
        let public = [
            header("PUBLIC KEY"),
            header("CERTIFICATE"),
            header("CERTIFICATE REQUEST"),
            "The private key stays with the owner; begin with the public key.".to_owned(),
        ];
        for miss in &public {
            assert_eq!(reason(miss.as_bytes()), None, "{miss}");
        }
    }

    /// A key saved as UTF-16, either byte order, with or without a byte order mark, is
    /// decoded and found; so are a token and a base64-encoded key in UTF-16.
    #[test]
    fn sync_secret_utf16_content_found() {
        let pem = pem_file("\r\n");
        for le in [true, false] {
            for bom in [true, false] {
                let bytes = utf16(&pem, le, bom);
                let found = reason(&bytes);
                let order = if le { "UTF-16LE" } else { "UTF-16BE" };
                assert_eq!(
                    found.as_deref(),
                    Some(format!("a PEM private key block (after decoding {order})").as_str()),
                    "bom={bom}"
                );
            }
        }
        let token = ["note: sk", "-ant-api03-", &"Q".repeat(40)].concat();
        assert!(reason(&utf16(&token, true, false)).is_some_and(|r| r.contains("Anthropic")));
        let encoded = base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
        assert_eq!(
            reason(&utf16(&encoded, true, true)).as_deref(),
            Some("a PEM private key block (after decoding UTF-16LE, then base64)")
        );
        // Ordinary UTF-16 text passes.
        let letter = "Dear Ana,\r\nthe invoice is attached. Thanks!\r\n";
        for le in [true, false] {
            assert_eq!(reason(&utf16(letter, le, true)), None);
            assert_eq!(reason(&utf16(letter, le, false)), None);
        }
    }

    /// Base64 runs that decode to key material are found: a PEM file encoded whole (wrapped
    /// as `base64` writes it, or on one line), a DER key, an OpenSSH key body, a token.
    #[test]
    fn sync_secret_base64_key_material_found() {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let wrap76 = |text: String| {
            text.as_bytes()
                .chunks(76)
                .map(|l| String::from_utf8_lossy(l) + "\n")
                .collect::<String>()
        };
        let pem = pem_file("\n");
        let mut openssh = b"openssh-key-v1\0".to_vec();
        openssh.extend_from_slice(b"\0\0\0\x04none\0\0\0\x04none\0\0\0\0\0\0\0\x01");
        let token = sample(&["GITHUB=gh", "p_", &"k7".repeat(20), "\n"]);
        let cases = [
            (
                wrap76(b64(pem.as_bytes())),
                "a PEM private key block (after decoding base64)",
            ),
            (
                format!("key: {}\n", b64(pem.as_bytes())),
                "a PEM private key block (after decoding base64)",
            ),
            (b64(&rsa_der()), "a DER private key (after decoding base64)"),
            (
                b64(&openssh),
                "an OpenSSH private key (after decoding base64)",
            ),
            (b64(&token), "a GitHub token (after decoding base64)"),
            (
                b64(b64(pem.as_bytes()).as_bytes()),
                "a PEM private key block (after decoding base64, then base64)",
            ),
            (
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pem.as_bytes()),
                "a PEM private key block (after decoding base64)",
            ),
        ];
        for (text, expected) in &cases {
            assert_eq!(
                reason(text.as_bytes()).as_deref(),
                Some(*expected),
                "{text}"
            );
        }
        // A binary DER key file, as it is.
        assert_eq!(reason(&rsa_der()).as_deref(), Some(DER_PRIVATE_KEY));
    }

    /// The token shapes are found in plain text (each provider is tested in `rules`).
    #[test]
    fn sync_secret_tokens_found() {
        let hits = [
            sample(&[
                "ANTHROPIC_API_KEY=sk",
                "-ant-api03-",
                &"aB3_-".repeat(19),
                "AA\n",
            ]),
            sample(&["OPENAI_API_KEY=\"sk", "-proj-", &"Zx9-_".repeat(30), "\"\n"]),
            sample(&["key = AK", "IAABCDEFGHIJKLMNOP\n"]),
            sample(&["gh", "p_", &"a1".repeat(18)]),
            sample(&["xo", "xb-", "1234567890-abc"]),
            sample(&["sk", "_live_", "abcdefghij1234"]),
            sample(&[
                "Authorization: Bearer ey",
                "JhbGciOiJIUzI1NiJ9.",
                "ey",
                "JzdWIiOiIxMjM0NSJ9.sig",
            ]),
        ];
        for hit in &hits {
            assert!(reason(hit).is_some(), "{}", String::from_utf8_lossy(hit));
        }
    }

    /// Ordinary vault content passes: a note that talks about tokens and keys, an email, a
    /// SHA-256, a note with a base64 image, an ssh public key and a certificate.
    #[test]
    fn sync_secret_ordinary_notes_pass() {
        let note = "---\nid: t1\ntitle: Rotate the API token\n---\n# Tokens\n\nThe token \
                    expires on Friday; ask Ana for a new session. Our keys live in the password \
                    manager, never here. See https://example.com/docs/authentication/tokens-and-sessions.\n";
        let email = "From: Ana <ana@example.com>\r\nTo: Bo <bo@example.com>\r\nSubject: Invoice \
                     2024-117\r\nMessage-ID: <CAF=x8kQ2w3e4r5t6y7u8i9o0p@mail.example.com>\r\n\r\nHi Bo,\r\n\r\n\
                     please find the invoice attached. The reference is INV-2024-117-ACME-EUROPE.\r\n\r\n\
                     Best,\r\nAna\r\n";
        let hash = "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
                    commit 3d55b01a8e7c4f2b9d6e1a0c5f8b7e6d4c3b2a19\n";
        // A PNG's signature and chunks, then pseudo-random pixels, as a note embeds it.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x01\0\0\0\x01\0\x08\x06\0\0\0".to_vec();
        png.extend((0..60_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8));
        let image = format!(
            "# Floor plan\n\n![plan](data:image/png;base64,{})\n",
            base64::engine::general_purpose::STANDARD.encode(&png)
        );
        let ssh_public = format!(
            "ssh-ed25519 {} ana@laptop\n",
            base64::engine::general_purpose::STANDARD
                .encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20abcdefghijklmnopqrstuvwxyz012345")
        );
        let mut cert_der = vec![
            0x30, 0x82, 0x03, 0x00, 0x30, 0x82, 0x02, 0x00, 0xA0, 0x03, 0x02, 0x01, 0x02,
        ];
        cert_der.extend((0..700u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8));
        let certificate = format!(
            "{}\n{}\n-----END CERTIFICATE-----\n",
            header("CERTIFICATE"),
            base64::engine::general_purpose::STANDARD.encode(&cert_der)
        );
        for text in [note, email, hash, &image, &ssh_public, &certificate] {
            assert_eq!(reason(text.as_bytes()), None, "{text:.200}");
        }
    }

    /// The contract's seven forms that once reached a remote are all found (the names among
    /// them by name).
    #[test]
    fn sync_secret_issue_forms_found() {
        let pem = pem_file("\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
        let wrapped = pem.replacen(&["PRIV", "ATE"].concat(), &["PRIV", "ATE\n"].concat(), 1);
        let contents = [
            utf16(&pem, true, false),
            b64.into_bytes(),
            wrapped.into_bytes(),
            sample(&["sk", "-ant-api03-", &"x".repeat(93)]),
            sample(&["sk", "-proj-", &"y".repeat(156)]),
        ];
        for content in &contents {
            assert!(
                reason(content).is_some(),
                "{}",
                String::from_utf8_lossy(content)
            );
        }
        for name in [".env.local", ".env.production"] {
            assert!(secret_name_reason(name).is_some(), "{name}");
        }
    }
}

//! Look-alikes, flagged before the owner decides (contract invariant 8): who receives an
//! action (an address, a payee, a phone number) is checked for mixed scripts and confusable
//! characters per Unicode Technical Standard #39, with unicode-rs's `unicode-security` (the
//! crate rustc's own `mixed_script_confusables` lint uses); every text of a payload is
//! checked for hidden characters. Each finding is one warning line, starting `WARNING:`, that
//! `aie approvals show` prints above the payload and `show --json` lists in `warnings`.
//!
//! The checks, on a recipient value cut into labels at every character that is neither a
//! letter nor a digit (`alice@сustomer.example`: `alice`, `сustomer`, `example`):
//! - a label whose resolved script set (UTS #39 5.1) is empty mixes scripts: `сustomer` is
//!   Cyrillic `с` and Latin `ustomer`;
//! - a label that is not ASCII but whose characters all have ASCII look-alikes (their UTS #39
//!   skeleton is ASCII) is written to look like ASCII: all-Cyrillic `аррӏе`, fullwidth `５`;
//! - any hidden character ([`is_hidden`](super::is_hidden)): a bidi override, a zero-width
//!   space.
//!
//! Each warning says what the value looks like: every non-ASCII character with an ASCII
//! look-alike replaced by it, hidden characters dropped. Ordinary non-Latin addresses
//! (`иван@пример.рф`) pass: their labels are single-script and not all look-alikes.

use serde_json::Value;
use unicode_script::UnicodeScript;
use unicode_security::{MixedScript, skeleton};

use super::{hidden_chars, is_hidden, line};

/// Payload keys whose values say who receives the action, compared case-insensitively.
const RECIPIENT_KEYS: &[&str] = &[
    "to",
    "cc",
    "bcc",
    "from",
    "reply_to",
    "sender",
    "recipient",
    "recipients",
    "email",
    "address",
    "payee",
    "customer",
    "partner",
    "iban",
    "account",
    "phone",
];

/// Every warning about `payload`: look-alikes in its recipient fields, hidden characters in
/// any of its texts. Each names the field (`to[0]`, `body`).
pub fn payload_warnings(payload: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(payload, "", false, &mut out);
    out
}

/// Collects the warnings of `value` at `path`.
fn walk(value: &Value, path: &str, recipient: bool, out: &mut Vec<String>) {
    match value {
        Value::String(text) if recipient => {
            for warning in field_warnings(path, text) {
                push_once(out, warning);
            }
        }
        Value::String(text) => {
            if let Some(warning) = hidden_warning(path, text) {
                push_once(out, warning);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), recipient, out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let is_recipient = RECIPIENT_KEYS.contains(&key.to_ascii_lowercase().as_str());
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(item, &path, recipient || is_recipient, out);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn push_once(out: &mut Vec<String>, warning: String) {
    if !out.contains(&warning) {
        out.push(warning);
    }
}

/// What the value of `field` is, in a warning: "the address", "the payee", ...
fn noun(field: &str) -> String {
    let key = field
        .rsplit('.')
        .next()
        .unwrap_or(field)
        .split('[')
        .next()
        .unwrap_or(field)
        .to_ascii_lowercase();
    match key.as_str() {
        "payee" | "customer" | "partner" => format!("the {key}"),
        "phone" => "the phone number".to_owned(),
        "iban" | "account" => "the account".to_owned(),
        _ => "the address".to_owned(),
    }
}

/// The warnings about one recipient value (an address, a payee, a phone number) in `field`:
/// mixed scripts, look-alike characters, hidden characters. Empty when it looks like what
/// it is.
pub fn field_warnings(field: &str, value: &str) -> Vec<String> {
    let shown = format!("{} {} ({field})", noun(field), line(value));
    let looks = looks_like(value);
    let looks_note = if looks != value {
        format!("; it looks like {}", line(&looks))
    } else {
        String::new()
    };
    let mut out = Vec::new();
    let hidden = hidden_chars(value);
    if !hidden.is_empty() {
        out.push(format!(
            "WARNING: {shown} holds {}, shown escaped{looks_note}",
            describe_hidden(&hidden)
        ));
    }
    let mut mixed_scripts: Vec<String> = Vec::new();
    let mut mixed_chars = Vec::new();
    let mut lookalike_chars = Vec::new();
    for label in value
        .split(|c: char| !c.is_alphanumeric() && !is_hidden(c))
        .map(|l| l.chars().filter(|&c| !is_hidden(c)).collect::<String>())
        .filter(|l| !l.is_empty())
    {
        if !label.as_str().is_single_script() {
            for c in label.chars() {
                let script = c.script();
                let name = script.full_name().to_owned();
                if !matches!(
                    script,
                    unicode_script::Script::Common | unicode_script::Script::Inherited
                ) && !mixed_scripts.contains(&name)
                {
                    mixed_scripts.push(name);
                }
                if !c.is_ascii() && !mixed_chars.contains(&c) {
                    mixed_chars.push(c);
                }
            }
        } else if !label.is_ascii() && looks_like(&label).is_ascii() {
            for c in label.chars().filter(|c| !c.is_ascii()) {
                if !lookalike_chars.contains(&c) {
                    lookalike_chars.push(c);
                }
            }
        }
    }
    if !mixed_scripts.is_empty() {
        // Latin first, the script people expect an address in; the others as they come.
        mixed_scripts.sort_by_key(|name| name != "Latin");
        out.push(format!(
            "WARNING: {shown} mixes {} ({}){looks_note}",
            and_list(&mixed_scripts),
            describe_chars(&mixed_chars)
        ));
    }
    if !lookalike_chars.is_empty() {
        out.push(format!(
            "WARNING: {shown} is written in characters that only look like ASCII ones ({}){looks_note}",
            describe_chars(&lookalike_chars)
        ));
    }
    out
}

/// The warning about hidden characters in the text of `field`, if it holds any.
fn hidden_warning(field: &str, text: &str) -> Option<String> {
    let hidden = hidden_chars(text);
    (!hidden.is_empty()).then(|| {
        format!(
            "WARNING: {field} holds {}, shown escaped as \\u{{..}}: what it shows may not be what it says",
            describe_hidden(&hidden)
        )
    })
}

/// `value` as it looks: each non-ASCII character with an ASCII look-alike (an ASCII
/// character of the same UTS #39 skeleton) replaced by it, hidden characters dropped.
pub fn looks_like(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().filter(|&c| !is_hidden(c)) {
        match c {
            c if c.is_ascii() => out.push(c),
            c => match ascii_lookalike(c) {
                Some(ascii) => out.push_str(&ascii),
                None => out.push(c),
            },
        }
    }
    out
}

/// The printable ASCII characters by their UTS #39 skeleton.
fn ascii_skeletons() -> &'static Vec<(String, char)> {
    static TABLE: std::sync::OnceLock<Vec<(String, char)>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut buf = [0u8; 4];
        (b' '..=b'~')
            .map(char::from)
            .map(|a| (skeleton(a.encode_utf8(&mut buf)).collect(), a))
            .collect()
    })
}

/// The ASCII text non-ASCII `c` looks like, if any: the ASCII character of the same
/// skeleton (a digit for a digit, the same case for a letter), else its skeleton when that
/// is ASCII (`ﬁ`: `fi`).
fn ascii_lookalike(c: char) -> Option<String> {
    let mut buf = [0u8; 4];
    let proto: String = skeleton(c.encode_utf8(&mut buf)).collect();
    if proto.is_empty() {
        return None;
    }
    let same: Vec<char> = ascii_skeletons()
        .iter()
        .filter(|(s, _)| *s == proto)
        .map(|(_, a)| *a)
        .collect();
    let preferred = |a: &&char| {
        if c.is_numeric() {
            a.is_ascii_digit()
        } else if c.is_lowercase() {
            a.is_ascii_lowercase()
        } else if c.is_uppercase() {
            a.is_ascii_uppercase()
        } else {
            true
        }
    };
    match same.iter().find(preferred).or_else(|| same.first()) {
        Some(a) => Some(a.to_string()),
        None => proto.is_ascii().then_some(proto),
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// `с is U+0441, Cyrillic; ѕ is U+0455, Cyrillic`.
fn describe_chars(chars: &[char]) -> String {
    chars
        .iter()
        .map(|&c| format!("{c} is U+{:04X}, {}", u32::from(c), c.script().full_name()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `a bidi control (U+202E) and a zero-width character (U+200B)`.
fn describe_hidden(chars: &[char]) -> String {
    let each: Vec<String> = chars
        .iter()
        .map(|&c| {
            let kind = match c {
                '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}' => "a bidi control",
                '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => "a zero-width character",
                c if c.is_control() => "a control character",
                _ => "an invisible character",
            };
            format!("{kind} (U+{:04X})", u32::from(c))
        })
        .collect();
    and_list(&each)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The finding: a Cyrillic `с` in the domain is flagged, naming both scripts and what it
    /// looks like.
    #[test]
    fn lookalike_mixed_script_address_is_flagged() {
        let warnings = field_warnings("to[0]", "alice@\u{0441}ustomer.example");
        assert_eq!(
            warnings,
            [
                "WARNING: the address alice@\u{0441}ustomer.example (to[0]) mixes Latin and Cyrillic (\u{0441} is U+0441, Cyrillic); it looks like alice@customer.example"
            ]
        );
    }

    /// All-Cyrillic look-alikes and fullwidth digits are flagged too; a bidi override names
    /// itself and the text it hides in.
    #[test]
    fn lookalike_whole_script_and_hidden_characters_are_flagged() {
        let apple = field_warnings("to[0]", "\u{0430}\u{0440}\u{0440}\u{04cf}\u{0435}.com");
        assert_eq!(apple.len(), 1, "{apple:?}");
        assert!(apple[0].contains("only look like ASCII"), "{apple:?}");
        assert!(apple[0].ends_with("it looks like apple.com"), "{apple:?}");

        let phone = field_warnings("phone", "+1 555 \u{ff10}\u{ff11}\u{ff12}");
        assert!(
            phone.iter().any(|w| w.contains("the phone number")),
            "{phone:?}"
        );

        let rlo = field_warnings("to[0]", "alice@exam\u{202e}elp.com");
        assert!(
            rlo[0].contains("a bidi control (U+202E)") && rlo[0].contains("\\u{202e}"),
            "{rlo:?}"
        );
        assert!(!rlo[0].contains('\u{202e}'), "{rlo:?}");
    }

    /// Addresses that are what they look like pass: ASCII, accented Latin, all-Cyrillic.
    #[test]
    fn lookalike_plain_addresses_pass() {
        for ok in [
            "alice@customer.example",
            "Alice <alice@customer.example>",
            "José <jose@empresa.example>",
            "иван@пример.рф",
            "Иван Petrov <ivan@example.org>",
            "+1 555 0100",
        ] {
            assert_eq!(field_warnings("to[0]", ok), Vec::<String>::new(), "{ok}");
        }
    }

    /// A payload: recipients checked for look-alikes, every text for hidden characters.
    #[test]
    fn lookalike_payload_warnings_name_their_fields() {
        let payload = serde_json::json!({
            "to": ["alice@\u{0441}ustomer.example"],
            "subject": "Invoice \u{202e}fdp.exe",
            "body": "\u{1b}[2J\u{1b}[Hall good",
            "cc": [],
        });
        let warnings = payload_warnings(&payload);
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("WARNING: body holds a control character (U+001B)"))
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("WARNING: subject holds a bidi control (U+202E)"))
        );
        assert!(warnings.iter().any(|w| w.contains("(to[0]) mixes")));
    }
}

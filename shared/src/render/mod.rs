//! The one rendering path for text a person reads: `aie approvals list|show`, the errors `aie`
//! prints, `Dashboard.md`, the tools' text renderings (and, later, the owner's web page).
//!
//! Whatever arrives from outside (a mail's headers, a draft written by the cloud, a file
//! pulled from the remote) may carry characters a terminal or an editor *acts on* instead of
//! showing: C0 and C1 controls (ANSI/CSI/OSC sequences start with ESC `\u{1b}` or the C1
//! CSI `\u{9b}`), bidi overrides and isolates that reorder what follows, zero-width and other
//! invisible characters. Each such character is written as `\u{HEX}` (lower-case hex, as
//! Rust writes it): `\u{1b}[2J` is shown, never run; tab, carriage return and (in
//! [`line`]) newline as `\t`, `\r` and `\n`. Every other character, non-ASCII letters
//! included, is shown as it is; a backslash stays a backslash, so a literal `\u{1b}` typed
//! by someone reads the same as an escaped ESC, and [`lookalike`] warns when a field holds
//! the real one.
//!
//! What is escaped ([`is_hidden`]): general categories Cc (controls), Cf (format: bidi
//! marks, embeddings, overrides and isolates, zero-width space and joiners, the BOM, tags),
//! Zl and Zp (line and paragraph separators), Co (private use, drawn as anything), Cn
//! (unassigned in the tables aie knows) and Cs; and the Default_Ignorable_Code_Point
//! characters outside those (the combining grapheme joiner, Hangul fillers, Khmer inherent
//! vowels, Mongolian and other variation selectors), which draw as nothing.
//!
//! # Layout
//! - this module: [`is_hidden`], [`line`], [`text`], [`json`] and [`Line`].
//! - [`lookalike`]: UTS #39 checks of addresses, payees and phone numbers (mixed scripts,
//!   confusables) and of every text in a payload (hidden characters), as warnings.

use std::{borrow::Cow, fmt};

use serde::Serialize;
use unicode_general_category::{GeneralCategory, get_general_category};

pub mod lookalike;
pub use lookalike::{field_warnings, payload_warnings};

/// Whether `c` is acted on or drawn as nothing by a terminal or an editor, so [`line`] and
/// [`text`] write it escaped.
pub fn is_hidden(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::Surrogate
    ) || is_other_default_ignorable(c)
}

/// The Default_Ignorable_Code_Point characters (Unicode's DerivedCoreProperties) that are not
/// of a category [`is_hidden`] escapes anyway.
fn is_other_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Whether `text` holds any character [`line`] would escape, newline excepted.
pub fn has_hidden(text: &str) -> bool {
    text.chars().any(|c| c != '\n' && is_hidden(c))
}

/// The hidden characters of `text` (newline excepted), in order, each once.
pub fn hidden_chars(text: &str) -> Vec<char> {
    let mut found = Vec::new();
    for c in text.chars().filter(|&c| c != '\n' && is_hidden(c)) {
        if !found.contains(&c) {
            found.push(c);
        }
    }
    found
}

/// Writes `c` escaped.
fn push_escaped(out: &mut String, c: char) {
    match c {
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
    }
}

/// `text` escaped, newlines kept when `keep_newlines`.
fn escape(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let hidden = |c: char| is_hidden(c) && !(keep_newlines && c == '\n');
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` as one line a person reads: every hidden character escaped, newlines too.
pub fn line(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// `text` as lines a person reads: every hidden character escaped, newlines kept.
pub fn text(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

/// `value` as pretty JSON in which every hidden character (any that serde_json would write
/// raw: C1 controls, bidi, invisible characters) is a `\uXXXX` escape: the same JSON value,
/// safe to print on a terminal.
pub fn json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let raw = serde_json::to_string_pretty(value)?;
    // Outside strings JSON is ASCII, so every hidden character left is inside one, where
    // `\uXXXX` (a surrogate pair above U+FFFF) means the same character.
    // serde_json already escapes C0 controls; DEL and everything non-ASCII it writes raw.
    let raw_hidden = |c: char| (c == '\u{7f}' || !c.is_ascii()) && is_hidden(c);
    if !raw.chars().any(raw_hidden) {
        return Ok(raw);
    }
    let mut out = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if raw_hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Displays a string as [`line`] does: `format!("{}", Line(&untrusted))`.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a>(pub &'a str);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&line(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clear-screen sequence, a bidi override and a zero-width space are shown, not run.
    #[test]
    fn render_escapes_terminal_sequences_bidi_and_invisibles() {
        assert_eq!(
            line("\u{1b}[2J\u{1b}[Hok\u{202e}txt.exe\u{200b}"),
            "\\u{1b}[2J\\u{1b}[Hok\\u{202e}txt.exe\\u{200b}"
        );
        assert_eq!(line("a\tb\r\nc"), "a\\tb\\r\\nc");
        assert_eq!(text("a\tb\r\nc"), "a\\tb\\r\nc");
        // OSC 8 hyperlink through the C1 forms, DEL, and a tag character.
        assert_eq!(
            line("\u{9d}8;;x\u{9c}\u{7f}\u{e0041}"),
            "\\u{9d}8;;x\\u{9c}\\u{7f}\\u{e0041}"
        );
        // Isolates, LRM/RLM, the BOM, the word joiner, a Hangul filler, a private-use glyph.
        for c in [
            '\u{2066}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{feff}', '\u{2060}', '\u{3164}',
            '\u{e000}', '\u{2028}', '\u{2029}', '\u{61c}', '\u{ad}',
        ] {
            assert!(is_hidden(c), "U+{:04X}", u32::from(c));
        }
    }

    /// Ordinary text, accents, other scripts, emoji and the backslash stay as they are.
    #[test]
    fn render_keeps_visible_text() {
        for visible in [
            "Café — 42 €",
            "Привет, мир",
            "مرحبا",
            "日本語のテキスト",
            "👍 done",
            "C:\\path",
            "alice@сustomer.example",
        ] {
            assert!(matches!(line(visible), Cow::Borrowed(_)), "{visible}");
        }
        assert_eq!(text("two\nlines\n"), "two\nlines\n");
    }

    /// JSON keeps the same value, with every hidden character as `\uXXXX`.
    #[test]
    fn render_json_is_the_same_value_without_raw_hidden_characters() {
        let value = serde_json::json!({"to": ["a\u{202e}b@x"], "body": "\u{1b}[31mred \u{1f600} \u{e0041}"});
        let out = json(&value).expect("json");
        assert!(!out.chars().any(|c| c != '\n' && is_hidden(c)), "{out}");
        assert!(
            out.contains("\\u202e") && out.contains("\\udb40\\udc41"),
            "{out}"
        );
        assert!(out.contains('\u{1f600}'), "{out}");
        let back: serde_json::Value = serde_json::from_str(&out).expect("parse");
        assert_eq!(back, value);
    }
}

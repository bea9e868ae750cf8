//! YAML front matter: the block between a file's first two `---` lines.
//!
//! Front matter is read into a YAML mapping and its known fields taken out one by one, so
//! an error names the field, and whatever is left (a human's own keys) is kept in order and
//! written back unchanged.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Serialize, de::DeserializeOwned};
use yaml_serde::{Mapping, Value};

/// Splits a file into its front matter's YAML and its body, or says why it cannot.
///
/// The file must start with a `---` line; the front matter ends at the next `---` line and
/// the body is everything after that line, byte for byte.
pub(crate) fn split(text: &str) -> Result<(&str, &str), String> {
    // Some Windows editors start the file with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let opening = lines.next().unwrap_or_default();
    if opening.trim_end() != "---" {
        return Err("the file does not start with a `---` line".to_owned());
    }
    let yaml_start = opening.len();
    let mut offset = yaml_start;
    for line in lines {
        if line.trim_end() == "---" {
            return Ok((&text[yaml_start..offset], &text[offset + line.len()..]));
        }
        offset += line.len();
    }
    Err("no closing `---` line".to_owned())
}

/// Writes a mapping and a body back into one file's text.
pub(crate) fn join(mapping: &Mapping, body: &str) -> Result<String, String> {
    let yaml = yaml_serde::to_string(mapping).map_err(|e| e.to_string())?;
    Ok(format!("---\n{yaml}---\n{body}"))
}

/// Front matter being read: known fields are taken out, the rest stays for round-tripping.
pub(crate) struct Fields {
    map: Mapping,
}

impl Fields {
    /// Parses the YAML of a front matter; it must be a mapping (or empty).
    pub(crate) fn parse(yaml: &str) -> Result<Self, String> {
        let value: Value = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
        match value {
            Value::Mapping(map) => Ok(Self { map }),
            Value::Null => Ok(Self {
                map: Mapping::new(),
            }),
            _ => Err("expected `key: value` lines".to_owned()),
        }
    }

    /// Takes a field out, treating an explicit `null` as absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        // shift_remove, not remove: keep the order of the keys that stay.
        self.map.shift_remove(key).filter(|v| !v.is_null())
    }

    /// A field that must be present.
    pub(crate) fn required<T: DeserializeOwned>(&mut self, key: &str) -> Result<T, String> {
        self.optional(key)?
            .ok_or_else(|| format!("missing field `{key}`"))
    }

    /// A field that may be absent or `null`.
    pub(crate) fn optional<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, String> {
        self.take(key)
            .map(|v| yaml_serde::from_value(v).map_err(|e| format!("field `{key}`: {e}")))
            .transpose()
    }

    /// A timestamp that must be present.
    pub(crate) fn required_time(&mut self, key: &str) -> Result<DateTime<Utc>, String> {
        self.optional_time(key)?
            .ok_or_else(|| format!("missing field `{key}`"))
    }

    /// A timestamp that may be absent: RFC 3339, or a bare `YYYY-MM-DD` as people type it.
    pub(crate) fn optional_time(&mut self, key: &str) -> Result<Option<DateTime<Utc>>, String> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        let text = match &value {
            Value::String(s) => s.as_str(),
            _ => {
                return Err(format!(
                    "field `{key}`: expected a timestamp like 2025-01-31T09:00:00Z"
                ));
            }
        };
        parse_time(text).map(Some).ok_or_else(|| {
            format!("field `{key}`: {text:?} is not a timestamp like 2025-01-31T09:00:00Z")
        })
    }

    /// Whatever keys were not taken: a human's own fields, in their order.
    pub(crate) fn rest(self) -> Mapping {
        self.map
    }
}

/// Parses RFC 3339 (any offset, kept as UTC) or a bare date (midnight UTC).
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// A timestamp as the vault writes it: RFC 3339, UTC, whole seconds.
pub(crate) fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Front matter being written: known fields first, in a fixed order, then the kept extras.
#[derive(Default)]
pub(crate) struct FieldsOut {
    map: Mapping,
}

impl FieldsOut {
    /// Writes a field.
    pub(crate) fn put<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), String> {
        let value = yaml_serde::to_value(value).map_err(|e| format!("field `{key}`: {e}"))?;
        self.map.insert(Value::String(key.to_owned()), value);
        Ok(())
    }

    /// Writes a field when it has a value.
    pub(crate) fn put_opt<T: Serialize>(
        &mut self,
        key: &str,
        value: Option<&T>,
    ) -> Result<(), String> {
        match value {
            Some(value) => self.put(key, value),
            None => Ok(()),
        }
    }

    /// Writes a timestamp when there is one.
    pub(crate) fn put_time(&mut self, key: &str, time: Option<DateTime<Utc>>) {
        if let Some(time) = time {
            self.map.insert(
                Value::String(key.to_owned()),
                Value::String(format_time(time)),
            );
        }
    }

    /// Appends the extras kept from reading, after the known fields.
    pub(crate) fn finish(mut self, extra: &Mapping) -> Mapping {
        for (key, value) in extra {
            // A known field always wins over a stale copy among the extras.
            if !self.map.contains_key(key) {
                self.map.insert(key.clone(), value.clone());
            }
        }
        self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body after the closing line is returned byte for byte, CRLF files included.
    #[test]
    fn vault_frontmatter_split_keeps_body_exactly() {
        let (yaml, body) = split("---\na: 1\n---\n\nBody\n---\nmore").expect("split");
        assert_eq!(yaml, "a: 1\n");
        assert_eq!(body, "\nBody\n---\nmore");
        let (yaml, body) = split("---\r\na: 1\r\n---\r\nx").expect("crlf");
        assert_eq!(yaml, "a: 1\r\n");
        assert_eq!(body, "x");
        let (yaml, body) = split("---\n---").expect("empty");
        assert_eq!((yaml, body), ("", ""));
    }

    /// Files without an opening or closing line are refused with the reason.
    #[test]
    fn vault_frontmatter_split_refuses_unfenced() {
        assert!(
            split("# no front matter\n")
                .expect_err("must fail")
                .contains("does not start")
        );
        assert!(
            split("---\na: 1\n")
                .expect_err("must fail")
                .contains("no closing")
        );
        assert!(split("").is_err());
    }

    /// Missing and mistyped fields are named; nulls count as absent; extras keep their order.
    #[test]
    fn vault_frontmatter_fields_name_the_field() {
        let mut fields = Fields::parse("z: 1\ntitle: 5\nowner: null\na: 2\n").expect("parse");
        assert_eq!(
            fields.required::<String>("id").expect_err("must fail"),
            "missing field `id`"
        );
        assert!(
            fields
                .required::<Vec<u8>>("title")
                .expect_err("must fail")
                .starts_with("field `title`: ")
        );
        assert_eq!(fields.optional::<String>("owner").expect("null"), None);
        let rest: Vec<_> = fields
            .rest()
            .keys()
            .filter_map(|k| k.as_str().map(String::from))
            .collect();
        assert_eq!(rest, ["z", "a"]);
    }

    /// RFC 3339 with any offset and bare dates are accepted; anything else names the field.
    #[test]
    fn vault_frontmatter_timestamps() {
        let mut f =
            Fields::parse("a: 2025-01-31T10:00:00+01:00\nb: 2025-01-31\nc: soon\n").expect("parse");
        assert_eq!(
            format_time(f.required_time("a").expect("a")),
            "2025-01-31T09:00:00Z"
        );
        assert_eq!(
            format_time(f.required_time("b").expect("b")),
            "2025-01-31T00:00:00Z"
        );
        assert!(
            f.required_time("c")
                .expect_err("must fail")
                .contains("field `c`")
        );
    }
}

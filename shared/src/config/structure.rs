//! The structural pass: walks the parsed TOML beside the config's own JSON Schema and reports
//! every unknown key, wrong type, value outside its set and missing key, each at its line.
//!
//! Walking the schema rather than trusting serde is what lets `aie config check` report all
//! of a file's errors at once: serde stops at the first. Each offending key is then pruned
//! from the tree, so serde can still read the rest and the semantic pass can check it too.
//! And since the schema is the one `aie config schema` prints, an editor and `check` agree.

use std::collections::BTreeMap;

use serde_json::Value;
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

/// Turns byte offsets into 1-based line numbers.
pub(crate) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    /// The line starts of `text`.
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    /// The 1-based line holding byte `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }
}

/// One problem found, before it is tied to a file.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Key path to the line it is written on, e.g. `upstream[0].url` -> 12.
pub(crate) type Index = BTreeMap<String, usize>;

/// Appends `key` to a key path, quoting it unless it is a bare TOML key.
pub(crate) fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// The path one level up: `upstream[0].url` -> `upstream[0]` -> `upstream` -> `None`.
pub(crate) fn parent(path: &str) -> Option<&str> {
    let mut quoted = false;
    let mut cut = None;
    let mut prev = '\0';
    for (i, c) in path.char_indices() {
        match c {
            '"' if prev != '\\' => quoted = !quoted,
            '.' | '[' if !quoted => cut = Some(i),
            _ => {}
        }
        prev = c;
    }
    cut.map(|i| &path[..i])
}

/// Checks `root` against `schema` (the config's JSON Schema), prunes what does not fit, and
/// returns the key-to-line index and what it found.
pub(crate) fn check(
    root: &mut Spanned<DeTable<'_>>,
    schema: &Value,
    lines: &Lines,
) -> (Index, Vec<Found>) {
    let empty = serde_json::Map::new();
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut walker = Walker {
        defs,
        lines,
        index: Index::new(),
        found: Vec::new(),
    };
    walker.table("", None, root.get_mut(), schema);
    (walker.index, walker.found)
}

struct Walker<'a> {
    defs: &'a serde_json::Map<String, Value>,
    lines: &'a Lines,
    index: Index,
    found: Vec<Found>,
}

impl<'a> Walker<'a> {
    fn push(&mut self, path: &str, line: Option<usize>, message: String) {
        self.found.push(Found {
            path: path.to_owned(),
            line,
            message,
        });
    }

    /// Follows `$ref`s into `$defs`.
    fn resolve(&self, mut schema: &'a Value) -> &'a Value {
        // A bound on the chain, in case a schema ever refers to itself.
        for _ in 0..16 {
            let Some(name) = schema
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
            else {
                break;
            };
            match self.defs.get(name) {
                Some(def) => schema = def,
                None => break,
            }
        }
        schema
    }

    /// Checks one value; `false` means it does not fit and its key should be pruned.
    fn value(
        &mut self,
        path: &str,
        line: usize,
        value: &mut DeValue<'_>,
        schema: &'a Value,
    ) -> bool {
        let schema = self.resolve(schema);
        let alternatives = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Value::as_array);
        if let Some(alternatives) = alternatives {
            let branches: Vec<&Value> = alternatives.iter().map(|b| self.resolve(b)).collect();
            if let Some(allowed) = constants(&branches) {
                return self.constant(path, line, value, &allowed);
            }
            let fitting = branches
                .iter()
                .find(|b| type_fits(b, value))
                .or(branches.first());
            return match fitting {
                Some(branch) => self.value(path, line, value, branch),
                None => true,
            };
        }
        if let Some(allowed) = constants(&[schema]) {
            return self.constant(path, line, value, &allowed);
        }
        if !type_fits(schema, value) {
            let items = schema.get("items").map(|items| self.resolve(items));
            let of_tables = items.and_then(|i| i.get("type")) == Some(&Value::from("object"));
            let message = if of_tables && matches!(value, DeValue::Table(_)) {
                // `[gateway.clients]` where `[[gateway.clients]]` was meant.
                format!("expected an array of tables, found a table: write each one as [[{path}]]")
            } else {
                format!(
                    "expected {}, found {}",
                    expected(schema, of_tables),
                    found(value)
                )
            };
            self.push(path, Some(line), message);
            return false;
        }
        match value {
            DeValue::Table(table) => self.table(path, Some(line), table, schema),
            DeValue::Array(items) => {
                let Some(item_schema) = schema.get("items") else {
                    return true;
                };
                let mut fits = true;
                for (i, item) in items.iter_mut().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    let item_line = self.lines.line_of(item.span().start);
                    self.index.insert(item_path.clone(), item_line);
                    // `&=` on a bool evaluates both sides: every element is checked.
                    fits &= self.value(&item_path, item_line, item.get_mut(), item_schema);
                }
                fits
            }
            DeValue::Integer(int) => {
                let Ok(n) = i128::from_str_radix(int.as_str(), int.radix()) else {
                    return true;
                };
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                    && (n as f64) < min
                {
                    self.push(
                        path,
                        Some(line),
                        format!("must be at least {min}, found {n}"),
                    );
                    return false;
                }
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                    && (n as f64) > max
                {
                    self.push(
                        path,
                        Some(line),
                        format!("must be at most {max}, found {n}"),
                    );
                    return false;
                }
                true
            }
            _ => true,
        }
    }

    /// Checks a table's keys against `properties`, `additionalProperties` and `required`,
    /// pruning the keys that do not fit. A table itself always stays.
    fn table(
        &mut self,
        path: &str,
        line: Option<usize>,
        table: &mut DeTable<'_>,
        schema: &'a Value,
    ) -> bool {
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let mut pruned: Vec<String> = Vec::new();
        for (key, value) in table.iter_mut() {
            let name: &str = key.get_ref();
            let key_path = join(path, name);
            let key_line = self.lines.line_of(key.span().start);
            self.index.insert(key_path.clone(), key_line);
            let sub_schema = properties
                .and_then(|p| p.get(name))
                .or_else(|| additional.filter(|a| a.is_object()));
            let fits = match sub_schema {
                Some(sub_schema) => self.value(&key_path, key_line, value.get_mut(), sub_schema),
                None if additional == Some(&Value::Bool(false)) => {
                    let message = unknown_key(path, name, properties);
                    self.push(&key_path, Some(key_line), message);
                    false
                }
                None => true,
            };
            if !fits {
                pruned.push(name.to_owned());
            }
        }
        for name in &pruned {
            table.remove(name.as_str());
        }
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            // Pruned keys were reported already; only a key never written is missing.
            let written = table.contains_key(required) || pruned.iter().any(|p| p == required);
            if !written {
                let what = properties
                    .and_then(|p| p.get(required))
                    .and_then(|s| s.get("description"))
                    .and_then(Value::as_str)
                    .map(first_sentence)
                    .unwrap_or_default();
                let message = if what.is_empty() {
                    "missing; this key is required".to_owned()
                } else {
                    format!("missing; this key is required: {what}")
                };
                self.push(&join(path, required), line, message);
            }
        }
        true
    }

    /// Checks a value that must be one of a set of strings.
    fn constant(&mut self, path: &str, line: usize, value: &DeValue<'_>, allowed: &[&str]) -> bool {
        if let DeValue::String(s) = value
            && allowed.contains(&&**s)
        {
            return true;
        }
        let listed = allowed
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let got = match value {
            DeValue::String(s) => format!("`{s}`"),
            other => found(other).to_owned(),
        };
        self.push(
            path,
            Some(line),
            format!("expected one of {listed}, found {got}"),
        );
        false
    }
}

/// The allowed strings, when every branch is a `const` or `enum` of strings.
fn constants<'v>(branches: &[&'v Value]) -> Option<Vec<&'v str>> {
    let mut all = Vec::new();
    for branch in branches {
        if let Some(c) = branch.get("const") {
            all.push(c.as_str()?);
        } else if let Some(values) = branch.get("enum").and_then(Value::as_array) {
            for v in values {
                all.push(v.as_str()?);
            }
        } else {
            return None;
        }
    }
    (!all.is_empty()).then_some(all)
}

/// The JSON Schema type names a TOML value can satisfy.
fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "string",
        DeValue::Integer(_) => "integer",
        DeValue::Float(_) => "number",
        DeValue::Boolean(_) => "boolean",
        DeValue::Datetime(_) => "datetime",
        DeValue::Array(_) => "array",
        DeValue::Table(_) => "object",
    }
}

fn schema_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn type_fits(schema: &Value, value: &DeValue<'_>) -> bool {
    let types = schema_types(schema);
    let k = kind(value);
    types.is_empty()
        || types
            .iter()
            .any(|t| *t == k || (*t == "number" && k == "integer"))
}

/// What a schema expects, in words.
fn expected(schema: &Value, of_tables: bool) -> String {
    let words: Vec<&str> = schema_types(schema)
        .into_iter()
        .filter(|t| *t != "null")
        .map(|t| match t {
            "string" => "a string",
            "integer" => "an integer",
            "number" => "a number",
            "boolean" => "true or false",
            "array" if of_tables => "an array of tables",
            "array" => "an array",
            "object" => "a table",
            _ => "something else",
        })
        .collect();
    words.join(" or ")
}

/// What a TOML value is, in words.
fn found(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn first_sentence(text: &str) -> String {
    let text = text.replace('\n', " ");
    match text.find(". ") {
        Some(end) => text[..end].to_owned(),
        None => text.trim_end_matches('.').to_owned(),
    }
}

/// Keys people write that must never be in the file, with what to write instead. The parent
/// path has array indices blanked (`upstream[]`).
const REFUSED_KEYS: &[(&str, &str, &str)] = &[
    (
        "gateway.clients[]",
        "token",
        "never put a client's token in the config: store its SHA-256 in token_sha256 (printf %s \"$TOKEN\" | sha256sum)",
    ),
    (
        "email.imap",
        "password",
        "never put a password in the config: write it to a file in the state folder and name that file in password_file",
    ),
    (
        "email",
        "smtp_password",
        "never put a password in the config: write it to a file in the state folder and name that file in smtp_password_file",
    ),
    (
        "upstream[]",
        "headers",
        "never put header values in the config, they are usually secrets: name environment variables instead, e.g. headers_from_env = { Authorization = \"FIXTURES_TOKEN\" }",
    ),
    (
        "whatsapp",
        "token",
        "never put a token in the config: write it to a file in the state folder and name that file in token_file",
    ),
    (
        "payments",
        "api_key",
        "never put an API key in the config: write it to a file in the state folder and name that file in api_key_file",
    ),
];

/// The message for an unknown key: a refusal for a secret, else the closest known key.
fn unknown_key(parent: &str, key: &str, known: Option<&serde_json::Map<String, Value>>) -> String {
    let blanked = blank_indices(parent);
    if let Some((_, _, refusal)) = REFUSED_KEYS
        .iter()
        .find(|(p, k, _)| *p == blanked && *k == key)
    {
        return (*refusal).to_owned();
    }
    let known: Vec<&str> = known
        .map(|k| k.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let closest = known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .min()
        .filter(|(d, k)| *d <= 2.max(k.len() / 4));
    match closest {
        Some((_, k)) => format!("unknown key; did you mean `{k}`?"),
        None if known.is_empty() => "unknown key".to_owned(),
        None => format!("unknown key; the keys here are {}", known.join(", ")),
    }
}

/// `upstream[0].headers[2]` -> `upstream[].headers[]`.
fn blank_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets map to 1-based lines, a newline belonging to the line it ends.
    #[test]
    fn offsets_map_to_lines() {
        let lines = Lines::new("a\nbc\n\nd");
        assert_eq!(lines.line_of(0), 1);
        assert_eq!(lines.line_of(1), 1);
        assert_eq!(lines.line_of(2), 2);
        assert_eq!(lines.line_of(5), 3);
        assert_eq!(lines.line_of(6), 4);
    }

    /// Key paths quote keys that are not bare, and walk back up to their parents.
    #[test]
    fn key_paths_join_and_split() {
        assert_eq!(join("", "zone"), "zone");
        assert_eq!(join("policy.tools", "test_*"), "policy.tools.\"test_*\"");
        assert_eq!(parent("upstream[0].url"), Some("upstream[0]"));
        assert_eq!(parent("upstream[0]"), Some("upstream"));
        assert_eq!(parent("upstream"), None);
        assert_eq!(parent("policy.tools.\"a.b\""), Some("policy.tools"));
        assert_eq!(
            blank_indices("upstream[12].headers[3]"),
            "upstream[].headers[]"
        );
    }

    /// Misspelt keys get a suggestion; distances are Levenshtein's.
    #[test]
    fn misspelt_keys_get_a_suggestion() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        let mut known = serde_json::Map::new();
        known.insert("allowed_hosts".into(), Value::Null);
        known.insert("allowed_origins".into(), Value::Null);
        assert_eq!(
            unknown_key("http", "alowed_hosts", Some(&known)),
            "unknown key; did you mean `allowed_hosts`?"
        );
        assert!(unknown_key("http", "zzz", Some(&known)).contains("the keys here are"));
        assert!(unknown_key("gateway.clients[3]", "token", None).contains("sha256sum"));
    }
}

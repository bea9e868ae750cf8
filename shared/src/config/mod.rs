//! The config file, `aie.toml`: loading, validation, its JSON Schema, overrides and reload.
//!
//! A file goes through three passes, and every pass reports all it finds, each error naming
//! the file, the line and the key (`aie.toml:12: upstream[0].url: relative URL without a
//! base`):
//! 1. TOML syntax ([`toml::de::DeTable`], which keeps every key's position);
//! 2. structure, against the config's own JSON Schema ([`schema`]): unknown keys, wrong
//!    types, values outside their set, missing keys; offending keys are pruned so that
//! 3. the semantic pass can still read the rest into the `Raw*` structs and validate it
//!    into a [`Config`]: URLs, addresses, hashes, names, references, secrets.
//!
//! Every key, default and rule is in `specs/config.md`.
//!
//! # Layout
//! - `raw`: the file as written; its `///` docs become the schema's descriptions.
//! - `structure`: the schema-driven structural pass and the key-to-line index.
//! - `validate`: the semantic pass.
//! - [`model`]: the validated config.
//! - [`overrides`]: flags and `AIE_*` variables over the file.
//! - [`watch`]: reload on SIGHUP or file change.

use std::path::Path;

mod error;
pub use error::{ConfigError, ConfigErrors, OverrideError};

pub mod model;
pub use model::{
    ApprovalsConfig, Config, DEFAULT_LISTEN, DEFAULT_MAX_LIFETIME_HOURS,
    DEFAULT_REFUSAL_AUDIT_BURST, DEFAULT_REFUSAL_AUDIT_PER_SECOND, EmailConfig, GatewayClient,
    GatewayConfig, GitRemote, HttpConfig, ImapConfig, Limits, PaymentsConfig, PolicyConfig,
    Priority, RateLimit, SmtpUrl, SyncConfig, TlsPaths, TriageRule, Upstream, WhatsappConfig,
    default_state_dir,
};

pub mod overrides;
pub use overrides::{OVERRIDE_VARS, Overrides};

mod raw;
mod structure;
mod validate;

pub mod watch;
pub use watch::{ConfigWatcher, Reloaded};

use structure::{Found, Index, Lines};

/// Reads and validates the config file at `path`; relative paths in it are taken from its
/// folder. The error lists every problem in the file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_indexed(path).map(|(config, _)| config)
}

/// `aie config check FILE`: [`load`], and when the file itself says `zone = "cloud"`, also
/// every credential the cloud zone may not hold (see
/// [`crate::policy::cloud_forbidden_credentials`]).
pub fn check(path: &Path) -> Result<Config, ConfigErrors> {
    let (config, index) = load_indexed(path)?;
    if config.zone != Some(crate::policy::Zone::Cloud) {
        return Ok(config);
    }
    let ctx = validate::Ctx::new(&index);
    let found: Vec<Found> = config
        .executing_credentials()
        .into_iter()
        .map(|(key, why)| Found {
            path: key.to_owned(),
            line: ctx.line(key),
            message: format!(
                "{why}; a zone = \"cloud\" config may hold nothing that can execute: move it to the local zone's config"
            ),
        })
        .collect();
    if found.is_empty() {
        Ok(config)
    } else {
        Err(into_errors(path, found))
    }
}

/// Validates config text as if read from `path` (which names it in errors and whose folder
/// relative paths are taken from); nothing is read from disk.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    parse_indexed(text, path).map(|(config, _)| config)
}

/// [`parse`] for bytes that may not be UTF-8.
pub(crate) fn parse_bytes(bytes: &[u8], path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        into_errors(
            path,
            vec![Found {
                path: String::new(),
                line: None,
                message: format!("is not UTF-8 text ({e}); TOML files are UTF-8"),
            }],
        )
    })?;
    parse(text, path)
}

fn load_indexed(path: &Path) -> Result<(Config, Index), ConfigErrors> {
    let bytes = std::fs::read(path).map_err(|e| {
        into_errors(
            path,
            vec![Found {
                path: String::new(),
                line: None,
                message: format!("cannot be read: {e}"),
            }],
        )
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        into_errors(
            path,
            vec![Found {
                path: String::new(),
                line: None,
                message: format!("is not UTF-8 text ({e}); TOML files are UTF-8"),
            }],
        )
    })?;
    parse_indexed(text, path)
}

fn parse_indexed(text: &str, path: &Path) -> Result<(Config, Index), ConfigErrors> {
    let lines = Lines::new(text);
    // 1. Syntax. Recovery finds later syntax errors too, but the tree it leaves is not
    // trusted for anything else.
    let (mut table, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // After one mistake the parser often stumbles again on the same line; its first word
        // on each line is the one worth reading.
        let mut found: Vec<Found> = Vec::new();
        for e in &syntax {
            let line = e.span().map(|s| lines.line_of(s.start));
            if !found.iter().any(|f| f.line == line) {
                found.push(Found {
                    path: String::new(),
                    line,
                    message: e.message().trim().to_owned(),
                });
            }
        }
        return Err(into_errors(path, found));
    }
    // 2. Structure, against the schema; bad keys are pruned from `table`.
    let (index, mut found) = structure::check(&mut table, &schema(), &lines);
    // 3. Semantics, on what is left.
    let raw: raw::RawConfig =
        match serde::Deserialize::deserialize(toml::de::Deserializer::from(table)) {
            Ok(raw) => raw,
            Err(e) => {
                // The structural pass should have caught this; report it rather than guess.
                found.push(Found {
                    path: String::new(),
                    line: e.span().map(|s| lines.line_of(s.start)),
                    message: e.message().trim().to_owned(),
                });
                return Err(into_errors(path, found));
            }
        };
    let base = path.parent().unwrap_or(Path::new(""));
    let mut ctx = validate::Ctx::new(&index);
    let config = validate::validate(raw, base, &mut ctx);
    found.extend(ctx.found);
    if found.is_empty() {
        Ok((config, index))
    } else {
        Err(into_errors(path, found))
    }
}

fn into_errors(path: &Path, mut found: Vec<Found>) -> ConfigErrors {
    // Line order reads like the file; errors without a line (a whole-file problem) first.
    found.sort_by(|a, b| (a.line, &a.path).cmp(&(b.line, &b.path)));
    let file = path.display().to_string();
    ConfigErrors(
        found
            .into_iter()
            .map(|f| ConfigError {
                file: file.clone(),
                line: f.line,
                key: f.path,
                message: f.message,
            })
            .collect(),
    )
}

/// The JSON Schema (2020-12) of `aie.toml`, with every key's documentation as its
/// description: what `aie config schema` prints and what editors can validate against.
pub fn schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator
        .into_root_schema_for::<raw::RawConfig>()
        .to_value();
    drop_null(&mut schema);
    schema
}

/// Removes JSON's `null` from the schema: `Option` fields make schemars allow it, but TOML
/// has no null, so an optional key is simply left out.
fn drop_null(schema: &mut serde_json::Value) {
    use serde_json::Value;
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".to_owned(), only);
                }
            }
            for keyword in ["anyOf", "oneOf"] {
                let Some(Value::Array(branches)) = map.get_mut(keyword) else {
                    continue;
                };
                branches.retain(|b| b.get("type") != Some(&Value::from("null")));
                if branches.len() == 1 {
                    // One branch left: merge it in, so `{"anyOf": [{"$ref": ..}]}` reads as
                    // the `$ref` itself, keeping this schema's own description.
                    let Some(Value::Object(only)) = map
                        .remove(keyword)
                        .and_then(|mut b| b.as_array_mut().and_then(|a| a.pop()))
                    else {
                        continue;
                    };
                    for (k, v) in only {
                        map.entry(k).or_insert(v);
                    }
                }
            }
            for value in map.values_mut() {
                drop_null(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

#[cfg(test)]
mod tests;

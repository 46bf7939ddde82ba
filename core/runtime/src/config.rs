//! Layered configuration: built-in defaults (TOML) < config file < environment < command line.
//!
//! The defaults document is the schema: every key that exists has a default there, so a key that is
//! not in the defaults is an error, and a value whose type differs from the default's is an error
//! naming the key. Overrides are written `section.key` on the command line (`--net.max_frame 4096`)
//! and `LATTICE_SECTION__KEY` in the environment. Typed sections are then deserialised with the
//! failing key named in the error.

use std::path::Path;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// A configuration problem, reported as one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key that no section defines.
    #[error("unknown config key `{key}` (from {origin})")]
    UnknownKey {
        /// `section.key`.
        key: String,
        /// Where it came from (file path, environment variable, command line).
        origin: String,
    },
    /// A value of the wrong type or out of range.
    #[error("config key `{key}`: {problem} (from {origin})")]
    BadValue {
        /// `section.key`.
        key: String,
        /// What is wrong.
        problem: String,
        /// Where it came from.
        origin: String,
    },
    /// The config file cannot be read or parsed.
    #[error("config file {path}: {problem}")]
    File {
        /// The path given.
        path: String,
        /// What went wrong.
        problem: String,
    },
}

/// Where overrides come from.
#[derive(Debug, Default)]
pub struct Layers<'a> {
    /// The defaults document (the schema).
    pub defaults: &'a str,
    /// An optional config file.
    pub file: Option<&'a Path>,
    /// `(name, value)` environment variables; only `LATTICE_*` ones are used.
    pub env: Vec<(String, String)>,
    /// `(section.key, value)` pairs from the command line.
    pub args: Vec<(String, String)>,
}

/// Merges the layers into one table. Fails on unknown keys and type mismatches.
pub fn load(layers: &Layers<'_>) -> Result<Table, ConfigError> {
    let mut table: Table =
        layers
            .defaults
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: "<built-in defaults>".into(),
                problem: one_line(&e.to_string()),
            })?;
    if let Some(path) = layers.file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: shown.clone(),
            problem: e.to_string(),
        })?;
        let file: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: shown.clone(),
                problem: one_line(&e.to_string()),
            })?;
        for (section, v) in file {
            let Value::Table(keys) = v else {
                if table.get(&section).is_some_and(Value::is_table) {
                    return Err(ConfigError::BadValue {
                        problem: format!("is a section: write `[{section}]` and its keys under it"),
                        key: section,
                        origin: shown,
                    });
                }
                return Err(ConfigError::UnknownKey {
                    key: section,
                    origin: shown,
                });
            };
            for (key, value) in keys {
                set(
                    &mut table,
                    &format!("{section}.{key}"),
                    Raw::Typed(value),
                    &shown,
                )?;
            }
        }
    }
    for (name, value) in &layers.env {
        let Some(rest) = name.strip_prefix("LATTICE_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            if let Some(path) = single_underscore_key(&table, rest) {
                let (section, key) = path.split_once('.').unwrap_or_default();
                return Err(ConfigError::BadValue {
                    problem: format!(
                        "is not read: the environment form of {path} is LATTICE_{}__{} (two underscores between section and key)",
                        section.to_uppercase(),
                        key.to_uppercase()
                    ),
                    key: path,
                    origin: format!("environment {name}"),
                });
            }
            continue;
        };
        let path = format!("{}.{}", section.to_lowercase(), key.to_lowercase());
        set(
            &mut table,
            &path,
            Raw::Text(value),
            &format!("environment {name}"),
        )?;
    }
    for (path, value) in &layers.args {
        set(&mut table, path, Raw::Text(value), &format!("--{path}"))?;
    }
    Ok(table)
}

/// The key `SECTION_KEY` (after `LATTICE_`, one underscore where two belong) names, if any: a
/// near miss of the environment form, which would otherwise be ignored like the process's other
/// `LATTICE_*` variables.
fn single_underscore_key(table: &Table, rest: &str) -> Option<String> {
    let lower = rest.to_lowercase();
    lower.match_indices('_').find_map(|(i, _)| {
        let (section, key) = (&lower[..i], &lower[i + 1..]);
        table
            .get(section)
            .and_then(Value::as_table)
            .is_some_and(|t| t.contains_key(key))
            .then(|| format!("{section}.{key}"))
    })
}

/// Deserialises the merged table into `T`, naming the failing key.
pub fn typed<T: DeserializeOwned>(table: &Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(Value::Table(table.clone())).map_err(|e| {
        ConfigError::BadValue {
            key: e.path().to_string(),
            problem: one_line(&e.inner().to_string()),
            origin: "merged configuration".into(),
        }
    })
}

/// Deserialises section `name` of the merged table into `T`, naming the failing key.
pub fn typed_section<T: DeserializeOwned>(table: &Table, name: &str) -> Result<T, ConfigError> {
    let value = table
        .get(name)
        .cloned()
        .ok_or_else(|| ConfigError::UnknownKey {
            key: name.to_string(),
            origin: "built-in defaults (section missing)".into(),
        })?;
    serde_path_to_error::deserialize(value).map_err(|e| ConfigError::BadValue {
        key: format!("{name}.{}", e.path()),
        problem: one_line(&e.inner().to_string()),
        origin: "merged configuration".into(),
    })
}

enum Raw<'a> {
    Typed(Value),
    Text(&'a str),
}

fn set(table: &mut Table, path: &str, raw: Raw<'_>, origin: &str) -> Result<(), ConfigError> {
    let unknown = || ConfigError::UnknownKey {
        key: path.to_string(),
        origin: origin.to_string(),
    };
    let (section, key) = path.split_once('.').ok_or_else(unknown)?;
    let slot = table
        .get_mut(section)
        .and_then(Value::as_table_mut)
        .and_then(|t| t.get_mut(key))
        .ok_or_else(unknown)?;
    let bad = |problem: String| ConfigError::BadValue {
        key: path.to_string(),
        problem,
        origin: origin.to_string(),
    };
    let value = match raw {
        Raw::Typed(v) => v,
        Raw::Text(s) => match slot {
            Value::String(_) => Value::String(s.to_string()),
            Value::Integer(_) => Value::Integer(
                s.trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|_| bad(format!("expected an integer, got {s:?}")))?,
            ),
            Value::Float(_) => Value::Float(
                s.trim()
                    .parse()
                    .map_err(|_| bad(format!("expected a number, got {s:?}")))?,
            ),
            Value::Boolean(_) => Value::Boolean(match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(bad(format!(
                        "expected true or false (also 1/0, yes/no, on/off, any case), got {s:?}"
                    )))
                }
            }),
            _ => {
                let t: Table = format!("v = {s}").parse().map_err(|e: toml::de::Error| {
                    // The parser's position is in the wrapped line: give its reason only.
                    let why = one_line(e.message().trim_end_matches('.'));
                    let example = if slot.is_array() {
                        "a TOML array, strings quoted: [\"a\", \"b\"]"
                    } else {
                        "a TOML inline table: { key = \"value\" }"
                    };
                    bad(format!("expected {example}, got {s:?} ({why})"))
                })?;
                t.get("v")
                    .cloned()
                    .ok_or_else(|| bad("empty value".into()))?
            }
        },
    };
    if std::mem::discriminant(&value) != std::mem::discriminant(slot) {
        return Err(bad(format!(
            "expected {}, got {}",
            slot.type_str(),
            value.type_str()
        )));
    }
    *slot = value;
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One documented key of the defaults document, for `--help`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyDoc {
    /// `section.key`.
    pub key: String,
    /// Default value as written.
    pub default: String,
    /// The comment lines above the key, joined.
    pub help: String,
}

/// Extracts every key with its default and the comment above it from a defaults document.
pub fn key_docs(defaults: &str) -> Vec<KeyDoc> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut comment: Vec<&str> = Vec::new();
    for line in defaults.lines() {
        let l = line.trim();
        if let Some(c) = l.strip_prefix('#') {
            comment.push(c.trim());
        } else if l.starts_with('[') && l.ends_with(']') {
            section = l[1..l.len() - 1].trim().to_string();
            comment.clear();
        } else if let Some((k, v)) = l.split_once('=') {
            out.push(KeyDoc {
                key: format!("{section}.{}", k.trim()),
                default: v.trim().to_string(),
                help: comment.join(" "),
            });
            comment.clear();
        } else {
            comment.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: &str = "
[net]
# Where to listen.
listen = \"0.0.0.0:7000\"
# Largest frame.
max_frame = 1048576
nodelay = true
ratio = 0.5
";

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Net {
        listen: String,
        max_frame: u32,
        nodelay: bool,
        ratio: f64,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        net: Net,
    }

    fn layers() -> Layers<'static> {
        Layers {
            defaults: DEFAULTS,
            ..Default::default()
        }
    }

    #[test]
    fn precedence_defaults_env_args() {
        let mut l = layers();
        l.env = vec![
            ("LATTICE_NET__MAX_FRAME".into(), "2048".into()),
            ("LATTICE_NET__NODELAY".into(), "false".into()),
            ("PATH".into(), "/bin".into()),
        ];
        l.args = vec![("net.max_frame".into(), "4_096".into())];
        let c: Cfg = typed(&load(&l).unwrap()).unwrap();
        assert_eq!(c.net.max_frame, 4096, "command line beats environment");
        assert!(!c.net.nodelay);
        assert_eq!(c.net.listen, "0.0.0.0:7000");
        assert_eq!(c.net.ratio, 0.5);
    }

    #[test]
    fn one_underscore_where_two_belong_is_an_error_other_variables_are_ignored() {
        let mut l = layers();
        l.env = vec![("LATTICE_NET_MAX_FRAME".into(), "2048".into())];
        let e = load(&l).unwrap_err().to_string();
        assert!(
            e.contains("`net.max_frame`")
                && e.contains("LATTICE_NET__MAX_FRAME")
                && e.contains("environment LATTICE_NET_MAX_FRAME"),
            "{e}"
        );
        // Not a key under any split: the process's own variables (test hooks, tools) stay quiet.
        l.env = vec![
            ("LATTICE_TEST_MYSQL_URL".into(), "mysql://x".into()),
            ("LATTICE_NET_NOPE".into(), "1".into()),
            ("LATTICE_FAULT".into(), "1".into()),
        ];
        load(&l).unwrap();
    }

    #[test]
    fn a_list_that_is_not_toml_says_what_is_expected() {
        let l = Layers {
            defaults: "[access]\ndeny = []\n",
            args: vec![("access.deny".into(), "[10.0.0.0/8]".into())],
            ..Default::default()
        };
        let e = load(&l).unwrap_err().to_string();
        assert!(
            e.contains("expected a TOML array, strings quoted")
                && e.contains("got \"[10.0.0.0/8]\"")
                && !e.contains("v = ")
                && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn file_layer_and_its_errors() {
        let dir = std::env::temp_dir().join(format!("lattice-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "[net]\nmax_frame = 100\n").unwrap();
        let mut l = layers();
        l.file = Some(&good);
        let c: Cfg = typed(&load(&l).unwrap()).unwrap();
        assert_eq!(c.net.max_frame, 100);
        // A section's name given a plain value: said so, not called unknown.
        let flat = dir.join("flat.toml");
        std::fs::write(&flat, "net = 5\n").unwrap();
        let mut l2 = layers();
        l2.file = Some(&flat);
        let e = load(&l2).unwrap_err().to_string();
        assert!(e.contains("config key `net`: is a section"), "{e}");

        let typo = dir.join("typo.toml");
        std::fs::write(&typo, "[net]\nmax_frmae = 100\n").unwrap();
        l.file = Some(&typo);
        let e = load(&l).unwrap_err().to_string();
        assert!(e.contains("unknown config key `net.max_frmae`"), "{e}");

        let wrong = dir.join("wrong.toml");
        std::fs::write(&wrong, "[net]\nmax_frame = \"big\"\n").unwrap();
        l.file = Some(&wrong);
        let e = load(&l).unwrap_err().to_string();
        assert!(
            e.contains("`net.max_frame`: expected integer, got string"),
            "{e}"
        );

        let broken = dir.join("broken.toml");
        std::fs::write(&broken, "[net\n").unwrap();
        l.file = Some(&broken);
        assert!(matches!(load(&l), Err(ConfigError::File { .. })));
        l.file = Some(Path::new("/nonexistent/lattice.toml"));
        assert!(matches!(load(&l), Err(ConfigError::File { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_overrides_name_the_key() {
        let mut l = layers();
        l.args = vec![("net.max_frame".into(), "lots".into())];
        let e = load(&l).unwrap_err().to_string();
        assert_eq!(
            e,
            "config key `net.max_frame`: expected an integer, got \"lots\" (from --net.max_frame)"
        );
        l.args = vec![("nope.key".into(), "1".into())];
        assert!(load(&l).unwrap_err().to_string().contains("`nope.key`"));
        l.args = vec![("net".into(), "1".into())];
        assert!(load(&l).is_err());
        l.args = vec![("net.nodelay".into(), "maybe".into())];
        assert!(load(&l).unwrap_err().to_string().contains("true or false"));
    }

    #[test]
    fn typed_errors_name_the_key() {
        let mut l = layers();
        l.args = vec![("net.max_frame".into(), "-1".into())];
        let e = typed::<Cfg>(&load(&l).unwrap()).unwrap_err().to_string();
        assert!(e.starts_with("config key `net.max_frame`:"), "{e}");
    }

    #[test]
    fn key_docs_reads_comments() {
        let docs = key_docs(DEFAULTS);
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[0].key, "net.listen");
        assert_eq!(docs[0].help, "Where to listen.");
        assert_eq!(docs[1].default, "1048576");
        assert_eq!(docs[2].help, "");
    }
}

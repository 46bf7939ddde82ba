//! The icon description file (`proto/icons/icons.txt`): one icon per line, `ID NAME DESCRIPTION`.
//!
//! Pure parsing (no I/O), shared by `build.rs` (the TypeScript `Icon` enum) and the server's
//! `lattice tool icons import`. Comment lines start with `#`; blank lines are skipped.

use std::fmt;

/// One icon as the description file declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IconDecl {
    /// Stable id, 1..=65535.
    pub id: u32,
    /// `[a-z][a-z0-9_]*`; the picture is `NAME.png` next to the description file.
    pub name: String,
    /// Free text (may be empty).
    pub description: String,
}

impl IconDecl {
    /// The PNG file name of this icon.
    pub fn file_name(&self) -> String {
        format!("{}.png", self.name)
    }
}

/// A problem in the description file, with its 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IconParseError {
    /// Line number (1-based).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for IconParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "icons.txt line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for IconParseError {}

/// Largest icon id.
pub const MAX_ICON_ID: u32 = 65_535;

/// Parses the description file. Fails on the first bad line: a missing or non-numeric id, an id
/// out of 1..=65535, a bad name, or an id or name used twice.
pub fn parse(text: &str) -> Result<Vec<IconDecl>, IconParseError> {
    let mut out: Vec<IconDecl> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| IconParseError {
            line: i + 1,
            reason,
        };
        // Fields are separated by any run of spaces or tabs.
        let word = |s: &str| -> (String, String) {
            let s = s.trim_start();
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            (s[..end].to_string(), s[end..].to_string())
        };
        let (id_text, rest) = word(line);
        let (name, rest) = word(&rest);
        let name = name.as_str();
        let id: u32 = id_text
            .parse()
            .map_err(|_| err(format!("id {id_text:?} is not a number")))?;
        if id == 0 || id > MAX_ICON_ID {
            return Err(err(format!("id {id} is outside 1..={MAX_ICON_ID}")));
        }
        let mut chars = name.chars();
        let good = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !good {
            return Err(err(format!(
                "name {name:?} must be lowercase letters, digits and `_`, starting with a letter"
            )));
        }
        if let Some(prev) = out.iter().find(|d| d.id == id || d.name == name) {
            return Err(err(format!(
                "id {id} or name {name:?} is already used by icon {} {:?}",
                prev.id, prev.name
            )));
        }
        out.push(IconDecl {
            id,
            name: name.to_string(),
            description: rest.trim().to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_skips_comments() {
        let v = parse("# c\n\n1 coin Gold coin.\n  7 big_gem  \n").unwrap();
        assert_eq!(
            v,
            vec![
                IconDecl {
                    id: 1,
                    name: "coin".into(),
                    description: "Gold coin.".into()
                },
                IconDecl {
                    id: 7,
                    name: "big_gem".into(),
                    description: String::new()
                }
            ]
        );
        assert_eq!(v[1].file_name(), "big_gem.png");
        // Any run of spaces or tabs separates the fields; the description keeps its inner spaces.
        let v = parse("3  gem \t Blue  gem.\n").unwrap();
        assert_eq!((v[0].id, v[0].name.as_str()), (3, "gem"));
        assert_eq!(v[0].description, "Blue  gem.");
    }

    #[test]
    fn bad_lines_name_the_line() {
        for (text, want) in [
            ("x coin d", "not a number"),
            ("0 coin d", "outside"),
            ("70000 coin d", "outside"),
            ("1 Coin d", "lowercase"),
            ("1 9coin d", "lowercase"),
            ("1", "lowercase"),
            ("1 coin a\n2 coin b", "already used"),
            ("1 coin a\n1 gem b", "already used"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
            assert!(e.line >= 1);
        }
    }

    #[test]
    fn the_committed_file_parses() {
        let v = parse(include_str!("../icons/icons.txt")).unwrap();
        assert!(v.len() >= 4);
    }
}

//! Length and character rules for account names, passwords and nicknames, each violation with its
//! own error code (docs/PROTOCOL.md, "Accounts"). Pure functions over the configured limits.

use lattice_proto::error_code as ec;

use super::config::AccountConfig;
use crate::text::hides_text;

/// A rule a value broke: the `Error.code` and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `Error.code`.
    pub code: u32,
    /// Human-readable reason (never echoes a password).
    pub message: String,
}

fn v(code: u32, message: String) -> Violation {
    Violation { code, message }
}

/// "character" or "characters" after a count.
fn characters(n: usize) -> &'static str {
    if n == 1 {
        "character"
    } else {
        "characters"
    }
}

/// Checks an account name; returns its canonical form (ASCII lowercase), the key names are
/// unique by.
pub fn account(cfg: &AccountConfig, name: &str) -> Result<String, Violation> {
    let n = name.chars().count();
    if n < cfg.account_min_len {
        return Err(v(
            ec::ACCOUNT_TOO_SHORT,
            format!(
                "account name needs at least {} {}",
                cfg.account_min_len,
                characters(cfg.account_min_len)
            ),
        ));
    }
    if n > cfg.account_max_len {
        return Err(v(
            ec::ACCOUNT_TOO_LONG,
            format!(
                "account name takes at most {} {}",
                cfg.account_max_len,
                characters(cfg.account_max_len)
            ),
        ));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let all_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || cfg.account_symbols.contains(c));
    if !first_ok || !all_ok {
        return Err(v(
            ec::ACCOUNT_BAD_CHARS,
            format!(
                "account name: ASCII letters, digits and {:?}, starting with a letter or digit",
                cfg.account_symbols
            ),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// Checks a password.
pub fn password(cfg: &AccountConfig, pw: &str) -> Result<(), Violation> {
    if pw.chars().count() < cfg.password_min_len {
        return Err(v(
            ec::PASSWORD_TOO_SHORT,
            format!(
                "password needs at least {} {}",
                cfg.password_min_len,
                characters(cfg.password_min_len)
            ),
        ));
    }
    if pw.len() > cfg.password_max_len {
        return Err(v(
            ec::PASSWORD_TOO_LONG,
            format!("password takes at most {} bytes", cfg.password_max_len),
        ));
    }
    let bad = if cfg.password_ascii_only {
        pw.chars().any(|c| !(' '..='~').contains(&c))
    } else {
        pw.chars().any(char::is_control)
    };
    if bad {
        return Err(v(
            ec::PASSWORD_BAD_CHARS,
            if cfg.password_ascii_only {
                "password: printable ASCII only".into()
            } else {
                "password: no control characters".into()
            },
        ));
    }
    Ok(())
}

/// Checks a nickname.
pub fn nickname(cfg: &AccountConfig, nick: &str) -> Result<(), Violation> {
    let n = nick.chars().count();
    if n < cfg.nickname_min_len {
        return Err(v(
            ec::NICKNAME_TOO_SHORT,
            format!(
                "nickname needs at least {} {}",
                cfg.nickname_min_len,
                characters(cfg.nickname_min_len)
            ),
        ));
    }
    if n > cfg.nickname_max_len {
        return Err(v(
            ec::NICKNAME_TOO_LONG,
            format!(
                "nickname takes at most {} {}",
                cfg.nickname_max_len,
                characters(cfg.nickname_max_len)
            ),
        ));
    }
    let ends_blank = nick.starts_with(char::is_whitespace) || nick.ends_with(char::is_whitespace);
    let bad_char = hides_text(nick);
    let space = !cfg.nickname_spaces && nick.chars().any(char::is_whitespace);
    if ends_blank || bad_char || space {
        return Err(v(
            ec::NICKNAME_BAD_CHARS,
            if space {
                "nickname: no spaces".into()
            } else {
                "nickname: no control or invisible characters, no spaces at either end".into()
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AccountConfig {
        AccountConfig::for_tests()
    }

    #[test]
    fn account_names() {
        let c = cfg();
        assert_eq!(account(&c, "Alice_99").unwrap(), "alice_99");
        for (name, code) in [
            ("", ec::ACCOUNT_TOO_SHORT),
            ("ab", ec::ACCOUNT_TOO_SHORT),
            (&"a".repeat(33) as &str, ec::ACCOUNT_TOO_LONG),
            ("_alice", ec::ACCOUNT_BAD_CHARS),
            ("al ice", ec::ACCOUNT_BAD_CHARS),
            ("alicé", ec::ACCOUNT_BAD_CHARS),
            ("al!ce", ec::ACCOUNT_BAD_CHARS),
        ] {
            assert_eq!(account(&c, name).unwrap_err().code, code, "{name:?}");
        }
        assert!(account(&c, &"a".repeat(32)).is_ok());
        let mut c = cfg();
        c.account_symbols = String::new();
        assert_eq!(
            account(&c, "a.b.c").unwrap_err().code,
            ec::ACCOUNT_BAD_CHARS
        );
    }

    #[test]
    fn passwords() {
        let c = cfg();
        assert!(password(&c, "correct horse ✓").is_ok());
        assert_eq!(
            password(&c, "short").unwrap_err().code,
            ec::PASSWORD_TOO_SHORT
        );
        assert_eq!(
            password(&c, &"x".repeat(129)).unwrap_err().code,
            ec::PASSWORD_TOO_LONG
        );
        assert_eq!(
            password(&c, "abc\u{7}defgh").unwrap_err().code,
            ec::PASSWORD_BAD_CHARS
        );
        let mut c = cfg();
        c.password_ascii_only = true;
        assert_eq!(
            password(&c, "pässwörd12").unwrap_err().code,
            ec::PASSWORD_BAD_CHARS
        );
        // The message never echoes the password.
        let e = password(&c, "pässwörd12").unwrap_err();
        assert!(!e.message.contains("pässwörd12"));
    }

    #[test]
    fn nicknames() {
        let c = cfg();
        assert!(nickname(&c, "冒险者 Ann").is_ok());
        assert_eq!(nickname(&c, "").unwrap_err().code, ec::NICKNAME_TOO_SHORT);
        assert_eq!(
            nickname(&c, "").unwrap_err().message,
            "nickname needs at least 1 character"
        );
        assert_eq!(
            nickname(&c, &"名".repeat(25)).unwrap_err().message,
            "nickname takes at most 24 characters"
        );
        assert_eq!(
            nickname(&c, &"名".repeat(25)).unwrap_err().code,
            ec::NICKNAME_TOO_LONG
        );
        for bad in [
            " Ann",
            "Ann ",
            "An\nn",
            "A\u{200B}nn",
            "A\u{202E}nn",
            "\u{FEFF}Ann",
        ] {
            assert_eq!(
                nickname(&c, bad).unwrap_err().code,
                ec::NICKNAME_BAD_CHARS,
                "{bad:?}"
            );
        }
        let mut c = cfg();
        c.nickname_spaces = false;
        assert_eq!(
            nickname(&c, "A nn").unwrap_err().code,
            ec::NICKNAME_BAD_CHARS
        );
    }
}

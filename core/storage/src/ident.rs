//! The one rule for SQL identifiers (table, column and database names), which are spliced into
//! statement text rather than bound.
//!
//! Owns that check only. Knows nothing of tables, configuration or backends.

use super::StorageError;

/// Accepts `[A-Za-z0-9_]{1,64}`: safe to quote on both backends and within MySQL's name length.
pub(crate) fn check_ident(s: &str) -> Result<(), StorageError> {
    let ok =
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StorageError::Schema(format!(
            "identifier {s:?} is not [A-Za-z0-9_]{{1,64}}"
        )))
    }
}

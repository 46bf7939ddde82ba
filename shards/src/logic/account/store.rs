//! The account tables and their rows. All three rows of an account are written by the shard that
//! owns it (so one writer per row), through write-behind.
//!
//! | table | key | columns |
//! |---|---|---|
//! | `account_name` | `name` (canonical, lowercase) | `user_id` |
//! | `account` | `user_id` | `name` (as registered), `pw_hash` (PHC string), `token_gen`, `created_ms` |
//! | `profile` | `user_id` | `nickname`, `created_ms`, `last_login_ms`, `login_streak`, `last_day` |
//!
//! A registration marks `account`, then `profile`, then `account_name`: the journal keeps marks in
//! order and a crash keeps a prefix of it, so a name never points to a missing account.

use lattice_storage::{Migration, StorageError, TableSpec, Value};

/// Name index table.
pub const NAMES: &str = "account_name";
/// Accounts.
pub const ACCOUNTS: &str = "account";
/// Profiles.
pub const PROFILES: &str = "profile";

/// `account_name`.
pub fn name_spec() -> Result<TableSpec, StorageError> {
    TableSpec::new(NAMES, &["name"], &["user_id"])
}

/// `account`.
pub fn account_spec() -> Result<TableSpec, StorageError> {
    TableSpec::new(
        ACCOUNTS,
        &["user_id"],
        &["name", "pw_hash", "token_gen", "created_ms"],
    )
}

/// `profile`.
pub fn profile_spec() -> Result<TableSpec, StorageError> {
    TableSpec::new(
        PROFILES,
        &["user_id"],
        &[
            "nickname",
            "created_ms",
            "last_login_ms",
            "login_streak",
            "last_day",
        ],
    )
}

/// The migration creating the three tables.
pub fn migration(version: u32) -> Migration {
    Migration::portable(
        version,
        "accounts and profiles",
        &[
            "CREATE TABLE IF NOT EXISTS account_name (name VARCHAR(64) NOT NULL PRIMARY KEY, \
             user_id BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS account (user_id BIGINT NOT NULL PRIMARY KEY, \
             name VARCHAR(64) NOT NULL, pw_hash VARCHAR(255) NOT NULL, token_gen BIGINT NOT NULL, \
             created_ms BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS profile (user_id BIGINT NOT NULL PRIMARY KEY, \
             nickname VARCHAR(255) NOT NULL, created_ms BIGINT NOT NULL, \
             last_login_ms BIGINT NOT NULL, login_streak BIGINT NOT NULL, last_day BIGINT NOT NULL)",
        ],
    )
}

fn int(v: u64) -> Value {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

fn get_u64(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::UInt(u) => Some(*u),
        Value::Text(t) => t.parse().ok(),
        _ => None,
    }
}

fn get_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Text(t) => Some(t.clone()),
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

/// A stored row that does not have the expected shape (a hand-edited database).
#[derive(Debug, thiserror::Error)]
#[error("malformed {0} row")]
pub struct Malformed(pub &'static str);

/// A row of `account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// Key.
    pub user_id: u64,
    /// The name as registered.
    pub name: String,
    /// PHC string of the password hash.
    pub pw_hash: String,
    /// Token generation (raised by each password change).
    pub token_gen: u32,
    /// Registration time, Unix ms.
    pub created_ms: u64,
}

impl AccountRow {
    /// Key values.
    pub fn key(&self) -> Vec<Value> {
        vec![int(self.user_id)]
    }

    /// Column values.
    pub fn values(&self) -> Vec<Value> {
        vec![
            Value::Text(self.name.clone()),
            Value::Text(self.pw_hash.clone()),
            Value::Int(i64::from(self.token_gen)),
            int(self.created_ms),
        ]
    }

    /// From loaded columns.
    pub fn from_values(user_id: u64, v: &[Value]) -> Result<AccountRow, Malformed> {
        let m = || Malformed(ACCOUNTS);
        Ok(AccountRow {
            user_id,
            name: get_text(v.first()).ok_or_else(m)?,
            pw_hash: get_text(v.get(1)).ok_or_else(m)?,
            token_gen: get_u64(v.get(2))
                .and_then(|g| u32::try_from(g).ok())
                .ok_or_else(m)?,
            created_ms: get_u64(v.get(3)).ok_or_else(m)?,
        })
    }
}

/// A row of `profile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRow {
    /// Key.
    pub user_id: u64,
    /// Nickname.
    pub nickname: String,
    /// Registration time, Unix ms.
    pub created_ms: u64,
    /// Start of the last login, Unix ms (0 before the first).
    pub last_login_ms: u64,
    /// Consecutive game days with a login.
    pub login_streak: u32,
    /// Game day (days since 0001-01-01) of the last login counted in the streak; 0 = none.
    pub last_day: i64,
}

impl ProfileRow {
    /// Key values.
    pub fn key(&self) -> Vec<Value> {
        vec![int(self.user_id)]
    }

    /// Column values.
    pub fn values(&self) -> Vec<Value> {
        vec![
            Value::Text(self.nickname.clone()),
            int(self.created_ms),
            int(self.last_login_ms),
            Value::Int(i64::from(self.login_streak)),
            Value::Int(self.last_day),
        ]
    }

    /// From loaded columns.
    pub fn from_values(user_id: u64, v: &[Value]) -> Result<ProfileRow, Malformed> {
        let m = || Malformed(PROFILES);
        Ok(ProfileRow {
            user_id,
            nickname: get_text(v.first()).ok_or_else(m)?,
            created_ms: get_u64(v.get(1)).ok_or_else(m)?,
            last_login_ms: get_u64(v.get(2)).ok_or_else(m)?,
            login_streak: get_u64(v.get(3))
                .and_then(|s| u32::try_from(s).ok())
                .ok_or_else(m)?,
            last_day: v.get(4).and_then(Value::as_i64).ok_or_else(m)?,
        })
    }

    /// Counts a login on game day `day`: the same day changes nothing, the next day extends the
    /// streak, a later day starts a new one. Returns true when the streak changed.
    pub fn count_day(&mut self, day: i64) -> bool {
        if self.last_day == day {
            return false;
        }
        self.login_streak = if day == self.last_day + 1 {
            self.login_streak.saturating_add(1)
        } else {
            1
        };
        self.last_day = day;
        true
    }

    /// The protocol form.
    pub fn to_pb(&self) -> lattice_proto::pb::Profile {
        lattice_proto::pb::Profile {
            nickname: self.nickname.clone(),
            created_ms: self.created_ms,
            last_login_ms: self.last_login_ms,
            login_streak: self.login_streak,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let a = AccountRow {
            user_id: 1 << 62,
            name: "Ann".into(),
            pw_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into(),
            token_gen: 3,
            created_ms: 1_700_000_000_000,
        };
        assert_eq!(AccountRow::from_values(a.user_id, &a.values()).unwrap(), a);
        let p = ProfileRow {
            user_id: 5,
            nickname: "冒险者".into(),
            created_ms: 1,
            last_login_ms: 2,
            login_streak: 7,
            last_day: 739_000,
        };
        assert_eq!(ProfileRow::from_values(5, &p.values()).unwrap(), p);
        assert!(ProfileRow::from_values(5, &[Value::Null]).is_err());
        for spec in [name_spec(), account_spec(), profile_spec()] {
            spec.unwrap();
        }
    }

    #[test]
    fn the_streak_counts_consecutive_game_days() {
        let mut p = ProfileRow {
            user_id: 1,
            nickname: "a".into(),
            created_ms: 0,
            last_login_ms: 0,
            login_streak: 0,
            last_day: 0,
        };
        assert!(p.count_day(100));
        assert_eq!(p.login_streak, 1);
        assert!(!p.count_day(100), "same day");
        assert!(p.count_day(101));
        assert!(p.count_day(102));
        assert_eq!(p.login_streak, 3);
        assert!(p.count_day(110), "a gap starts over");
        assert_eq!(p.login_streak, 1);
    }
}

//! Opcode assignment checks, shared by `build.rs` (which runs them on the real `.proto` files) and the
//! unit tests (which feed them bad inputs). Pure std: no prost, no I/O.
//!
//! Rules:
//! - every top-level message has an explicit opcode in `1..=65535`, unless it is marked `no_opcode`;
//! - no two messages share an opcode;
//! - every opcode recorded in the lock file keeps its message: a moved opcode, a reassigned opcode or a
//!   message that disappeared fails the build (retire it in the lock file to delete a message; a
//!   retired opcode is never reused);
//! - a new message is accepted only when the lock file is being updated on purpose
//!   (`LATTICE_PROTO_UPDATE_LOCK=1`), so a forgotten `git add` of the lock file cannot slip through.

use std::collections::BTreeMap;
use std::fmt;

/// One message as declared in a `.proto` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decl {
    /// Fully-qualified protobuf name, e.g. `lattice.Hello`.
    pub full_name: String,
    /// Value of `(lattice.opcode)`, if set.
    pub opcode: Option<u32>,
    /// `(lattice.no_opcode)`: a building block that is never a frame body.
    pub no_opcode: bool,
    /// Declared inside another message (nested messages never need an opcode).
    pub nested: bool,
}

/// One line of the lock file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEntry {
    /// The frozen opcode.
    pub opcode: u16,
    /// The message that owns (or owned) it.
    pub full_name: String,
    /// The message was deleted; the opcode stays reserved forever.
    pub retired: bool,
}

/// Why the opcode assignments were refused. Each variant names every message involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckError {
    /// A top-level message has neither `(lattice.opcode)` nor `(lattice.no_opcode)`.
    MissingOpcode { message: String },
    /// Opcode 0 or above 65535.
    OutOfRange { message: String, opcode: u32 },
    /// A message sets both `(lattice.opcode)` and `(lattice.no_opcode)`.
    OpcodeAndNoOpcode { message: String },
    /// Two messages declare the same opcode.
    Duplicate {
        opcode: u16,
        first: String,
        second: String,
    },
    /// A message recorded in the lock file now has another opcode.
    Moved {
        message: String,
        locked: u16,
        now: u16,
    },
    /// A locked opcode now belongs to another message.
    Reassigned {
        opcode: u16,
        locked: String,
        now: String,
    },
    /// A locked message no longer exists (and is not marked retired).
    Vanished { message: String, opcode: u16 },
    /// A retired opcode was given to a message again.
    ReusedRetired {
        opcode: u16,
        retired: String,
        now: String,
    },
    /// A message is not in the lock file yet and the lock file is not being updated.
    NotLocked { message: String, opcode: u16 },
    /// The lock file does not parse.
    BadLockLine {
        line: usize,
        text: String,
        reason: &'static str,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::MissingOpcode { message } => write!(
                f,
                "message {message} has no opcode: add `option (lattice.opcode) = N;` \
                 or `option (lattice.no_opcode) = true;` if it is only used as a field"
            ),
            CheckError::OutOfRange { message, opcode } => {
                write!(
                    f,
                    "message {message} has opcode {opcode}, outside 1..=65535"
                )
            }
            CheckError::OpcodeAndNoOpcode { message } => {
                write!(
                    f,
                    "message {message} sets both (lattice.opcode) and (lattice.no_opcode)"
                )
            }
            CheckError::Duplicate {
                opcode,
                first,
                second,
            } => {
                write!(
                    f,
                    "duplicate opcode {opcode}: used by both {first} and {second}"
                )
            }
            CheckError::Moved {
                message,
                locked,
                now,
            } => write!(
                f,
                "opcode of {message} moved from {locked} (opcodes.lock) to {now}: \
                 opcodes never change, put {locked} back"
            ),
            CheckError::Reassigned {
                opcode,
                locked,
                now,
            } => write!(
                f,
                "opcode {opcode} is locked to {locked} but is now declared by {now}: \
                 pick a new opcode for {now}, or if {now} is {locked} renamed, \
                 change the name on line `{opcode} {locked}` of opcodes.lock"
            ),
            CheckError::Vanished { message, opcode } => write!(
                f,
                "message {message} (opcode {opcode}) is in opcodes.lock but no longer declared: \
                 restore it, or mark its lock line `{opcode} {message} retired`"
            ),
            CheckError::ReusedRetired {
                opcode,
                retired,
                now,
            } => write!(
                f,
                "opcode {opcode} was retired with {retired} and cannot be reused by {now}"
            ),
            CheckError::NotLocked { message, opcode } => write!(
                f,
                "new message {message} (opcode {opcode}) is not in proto/opcodes.lock: \
                 build once with LATTICE_PROTO_UPDATE_LOCK=1 and commit the lock file"
            ),
            CheckError::BadLockLine { line, text, reason } => {
                write!(f, "opcodes.lock line {line} `{text}`: {reason}")
            }
        }
    }
}

impl std::error::Error for CheckError {}

/// A message that passed the checks, with its opcode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assigned {
    /// The opcode.
    pub opcode: u16,
    /// Fully-qualified protobuf name.
    pub full_name: String,
}

/// Result of a successful check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Messages with opcodes, sorted by opcode.
    pub assigned: Vec<Assigned>,
    /// The lock file text that matches `assigned` (equal to the input unless messages were added).
    pub lock_text: String,
    /// Messages added to the lock file by this run (only non-empty when updating).
    pub added: Vec<Assigned>,
}

/// Header written at the top of a regenerated lock file.
pub const LOCK_HEADER: &str = "# Lattice opcode lock file: one `OPCODE MESSAGE` per line, sorted by opcode.\n\
# Generated and checked by proto/build.rs. Never edit an existing line: the build fails if an opcode moves.\n\
# To delete a message, append ` retired` to its line; a retired opcode is never reused.\n\
# New messages are added with `LATTICE_PROTO_UPDATE_LOCK=1 cargo build -p lattice-proto`.\n";

/// Parses the lock file. Blank lines and `#` comments are ignored.
pub fn parse_lock(text: &str) -> Result<Vec<LockEntry>, Vec<CheckError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason| CheckError::BadLockLine {
            line: i + 1,
            text: line.to_string(),
            reason,
        };
        let mut parts = line.split_whitespace();
        let (Some(op), Some(name)) = (parts.next(), parts.next()) else {
            errors.push(bad("expected `OPCODE MESSAGE [retired]`"));
            continue;
        };
        let retired = match parts.next() {
            None => false,
            Some("retired") => true,
            Some(_) => {
                errors.push(bad("only `retired` may follow the message name"));
                continue;
            }
        };
        if parts.next().is_some() {
            errors.push(bad("trailing text"));
            continue;
        }
        match op.parse::<u16>() {
            Ok(0) | Err(_) => errors.push(bad("opcode must be a number in 1..=65535")),
            Ok(opcode) => entries.push(LockEntry {
                opcode,
                full_name: name.to_string(),
                retired,
            }),
        }
    }
    // The lock file itself must not contradict itself.
    let mut by_op: BTreeMap<u16, &LockEntry> = BTreeMap::new();
    let mut by_name: BTreeMap<&str, &LockEntry> = BTreeMap::new();
    for e in &entries {
        if let Some(prev) = by_op.insert(e.opcode, e) {
            errors.push(CheckError::Duplicate {
                opcode: e.opcode,
                first: prev.full_name.clone(),
                second: e.full_name.clone(),
            });
        }
        if let Some(prev) = by_name.insert(&e.full_name, e) {
            errors.push(CheckError::Moved {
                message: e.full_name.clone(),
                locked: prev.opcode,
                now: e.opcode,
            });
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

/// Renders lock entries as lock-file text (header + sorted lines).
pub fn render_lock(entries: &[LockEntry]) -> String {
    let mut sorted: Vec<&LockEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.opcode);
    let mut out = String::from(LOCK_HEADER);
    for e in sorted {
        out.push_str(&format!("{} {}", e.opcode, e.full_name));
        if e.retired {
            out.push_str(" retired");
        }
        out.push('\n');
    }
    out
}

/// Checks the declared messages against each other and against the lock file.
///
/// With `update = true`, messages missing from the lock file are added (and reported in
/// [`Checked::added`]); moved, reassigned or vanished opcodes fail either way. All problems are
/// returned at once, in declaration order.
pub fn check(decls: &[Decl], lock_text: &str, update: bool) -> Result<Checked, Vec<CheckError>> {
    let mut errors = Vec::new();
    let lock = match parse_lock(lock_text) {
        Ok(lock) => lock,
        Err(mut e) => {
            errors.append(&mut e);
            Vec::new()
        }
    };

    // 1. Every declaration on its own, then duplicates among declarations.
    let mut assigned: Vec<Assigned> = Vec::new();
    let mut by_op: BTreeMap<u16, String> = BTreeMap::new();
    for d in decls {
        match (d.opcode, d.no_opcode) {
            (Some(_), true) => errors.push(CheckError::OpcodeAndNoOpcode {
                message: d.full_name.clone(),
            }),
            (None, true) => {}
            (None, false) if d.nested => {}
            (None, false) => errors.push(CheckError::MissingOpcode {
                message: d.full_name.clone(),
            }),
            (Some(op), false) => match u16::try_from(op) {
                Ok(op) if op != 0 => {
                    if let Some(first) = by_op.get(&op) {
                        errors.push(CheckError::Duplicate {
                            opcode: op,
                            first: first.clone(),
                            second: d.full_name.clone(),
                        });
                    } else {
                        by_op.insert(op, d.full_name.clone());
                        assigned.push(Assigned {
                            opcode: op,
                            full_name: d.full_name.clone(),
                        });
                    }
                }
                _ => errors.push(CheckError::OutOfRange {
                    message: d.full_name.clone(),
                    opcode: op,
                }),
            },
        }
    }

    // 2. Against the lock file.
    let mut new_lock = lock.clone();
    let mut added = Vec::new();
    for a in &assigned {
        let by_name = lock.iter().find(|e| e.full_name == a.full_name);
        let by_opcode = lock.iter().find(|e| e.opcode == a.opcode);
        if let Some(e) = by_name {
            if e.opcode != a.opcode {
                errors.push(CheckError::Moved {
                    message: a.full_name.clone(),
                    locked: e.opcode,
                    now: a.opcode,
                });
                continue;
            }
        }
        match by_opcode {
            Some(e) if e.full_name != a.full_name && e.retired => {
                errors.push(CheckError::ReusedRetired {
                    opcode: a.opcode,
                    retired: e.full_name.clone(),
                    now: a.full_name.clone(),
                })
            }
            Some(e) if e.full_name != a.full_name => errors.push(CheckError::Reassigned {
                opcode: a.opcode,
                locked: e.full_name.clone(),
                now: a.full_name.clone(),
            }),
            Some(_) => {}
            None if by_name.is_none() => {
                if update {
                    new_lock.push(LockEntry {
                        opcode: a.opcode,
                        full_name: a.full_name.clone(),
                        retired: false,
                    });
                    added.push(a.clone());
                } else {
                    errors.push(CheckError::NotLocked {
                        message: a.full_name.clone(),
                        opcode: a.opcode,
                    });
                }
            }
            None => {}
        }
    }
    for e in lock.iter().filter(|e| !e.retired) {
        if !assigned.iter().any(|a| a.full_name == e.full_name) {
            // A message that is still declared but errored above is not "vanished".
            if !decls.iter().any(|d| d.full_name == e.full_name) {
                errors.push(CheckError::Vanished {
                    message: e.full_name.clone(),
                    opcode: e.opcode,
                });
            }
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    assigned.sort_by_key(|a| a.opcode);
    let lock_text = if added.is_empty() {
        lock_text.to_string()
    } else {
        render_lock(&new_lock)
    };
    Ok(Checked {
        assigned,
        lock_text,
        added,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, opcode: Option<u32>) -> Decl {
        Decl {
            full_name: name.to_string(),
            opcode,
            no_opcode: false,
            nested: false,
        }
    }

    const LOCK: &str = "# comment\n1 lattice.Hello\n2 lattice.Welcome\n\n7 lattice.Old retired\n";

    fn good() -> Vec<Decl> {
        vec![
            decl("lattice.Hello", Some(1)),
            decl("lattice.Welcome", Some(2)),
        ]
    }

    #[test]
    fn accepts_matching_declarations() {
        let c = check(&good(), LOCK, false).expect("valid");
        assert_eq!(
            c.assigned.iter().map(|a| a.opcode).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(c.lock_text, LOCK);
        assert!(c.added.is_empty());
    }

    #[test]
    fn duplicate_names_both_messages() {
        let mut d = good();
        d.push(decl("lattice.Other", Some(2)));
        let errs = check(&d, LOCK, true).unwrap_err();
        assert_eq!(
            errs,
            vec![CheckError::Duplicate {
                opcode: 2,
                first: "lattice.Welcome".into(),
                second: "lattice.Other".into()
            }]
        );
        let text = errs[0].to_string();
        assert!(
            text.contains("lattice.Welcome") && text.contains("lattice.Other"),
            "{text}"
        );
    }

    #[test]
    fn missing_opcode_is_an_error_unless_nested_or_no_opcode() {
        let mut d = good();
        d.push(decl("lattice.NoOp", None));
        let errs = check(&d, LOCK, true).unwrap_err();
        assert_eq!(
            errs,
            vec![CheckError::MissingOpcode {
                message: "lattice.NoOp".into()
            }]
        );
        assert!(errs[0].to_string().contains("lattice.NoOp"));

        let mut d = good();
        d.push(Decl {
            nested: true,
            ..decl("lattice.Hello.Inner", None)
        });
        d.push(Decl {
            no_opcode: true,
            ..decl("lattice.Vec3", None)
        });
        assert!(check(&d, LOCK, false).is_ok());

        let mut d = good();
        d.push(Decl {
            no_opcode: true,
            ..decl("lattice.Both", Some(9))
        });
        assert_eq!(
            check(&d, LOCK, true).unwrap_err(),
            vec![CheckError::OpcodeAndNoOpcode {
                message: "lattice.Both".into()
            }]
        );
    }

    #[test]
    fn out_of_range_opcodes_are_rejected() {
        for bad in [0u32, 65_536, u32::MAX] {
            let mut d = good();
            d.push(decl("lattice.Big", Some(bad)));
            assert_eq!(
                check(&d, LOCK, true).unwrap_err(),
                vec![CheckError::OutOfRange {
                    message: "lattice.Big".into(),
                    opcode: bad
                }]
            );
        }
    }

    #[test]
    fn moved_opcode_fails_even_when_updating() {
        let d = vec![
            decl("lattice.Hello", Some(1)),
            decl("lattice.Welcome", Some(3)),
        ];
        let errs = check(&d, LOCK, true).unwrap_err();
        assert_eq!(
            errs,
            vec![CheckError::Moved {
                message: "lattice.Welcome".into(),
                locked: 2,
                now: 3
            }]
        );
        assert!(errs[0].to_string().contains("moved from 2"));
    }

    #[test]
    fn swapped_opcodes_fail() {
        let d = vec![
            decl("lattice.Hello", Some(2)),
            decl("lattice.Welcome", Some(1)),
        ];
        let errs = check(&d, LOCK, true).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs.iter().all(|e| matches!(e, CheckError::Moved { .. })));
    }

    #[test]
    fn reassigned_and_retired_opcodes_fail() {
        let d = vec![
            decl("lattice.Welcome", Some(2)),
            decl("lattice.NewHello", Some(1)),
            decl("lattice.Hello", Some(4)),
        ];
        let errs = check(&d, LOCK, true).unwrap_err();
        assert!(errs.contains(&CheckError::Reassigned {
            opcode: 1,
            locked: "lattice.Hello".into(),
            now: "lattice.NewHello".into()
        }));
        assert!(errs.contains(&CheckError::Moved {
            message: "lattice.Hello".into(),
            locked: 1,
            now: 4
        }));

        let mut d = good();
        d.push(decl("lattice.Zombie", Some(7)));
        assert_eq!(
            check(&d, LOCK, true).unwrap_err(),
            vec![CheckError::ReusedRetired {
                opcode: 7,
                retired: "lattice.Old".into(),
                now: "lattice.Zombie".into()
            }]
        );
    }

    #[test]
    fn vanished_message_fails() {
        let d = vec![decl("lattice.Hello", Some(1))];
        assert_eq!(
            check(&d, LOCK, true).unwrap_err(),
            vec![CheckError::Vanished {
                message: "lattice.Welcome".into(),
                opcode: 2
            }]
        );
    }

    #[test]
    fn new_message_needs_explicit_update() {
        let mut d = good();
        d.push(decl("lattice.Ping", Some(4)));
        assert_eq!(
            check(&d, LOCK, false).unwrap_err(),
            vec![CheckError::NotLocked {
                message: "lattice.Ping".into(),
                opcode: 4
            }]
        );
        let c = check(&d, LOCK, true).expect("update adds it");
        assert_eq!(
            c.added,
            vec![Assigned {
                opcode: 4,
                full_name: "lattice.Ping".into()
            }]
        );
        assert!(c.lock_text.starts_with(LOCK_HEADER));
        assert!(c
            .lock_text
            .contains("\n4 lattice.Ping\n7 lattice.Old retired\n"));
        // The regenerated lock is itself accepted without updating.
        let again = check(&d, &c.lock_text, false).expect("stable");
        assert!(again.added.is_empty());
    }

    #[test]
    fn malformed_lock_lines_are_reported_with_line_numbers() {
        let bad =
            "1 lattice.Hello\nnope\n2 lattice.Welcome extra\n0 lattice.Zero\n70000 lattice.Big\n";
        let errs = parse_lock(bad).unwrap_err();
        let lines: Vec<usize> = errs
            .iter()
            .map(|e| match e {
                CheckError::BadLockLine { line, .. } => *line,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        let dup = parse_lock("1 lattice.A\n1 lattice.B\n").unwrap_err();
        assert_eq!(
            dup,
            vec![CheckError::Duplicate {
                opcode: 1,
                first: "lattice.A".into(),
                second: "lattice.B".into()
            }]
        );
    }
}

//! `Error.code` values (docs/PROTOCOL.md, "Error codes"). Pure constants, also read by `build.rs`
//! for the TypeScript `ErrorCode` enum.

/// The body does not decode as the opcode's message.
pub const BAD_REQUEST: u32 = 1;
/// No message has this opcode.
pub const UNKNOWN_OPCODE: u32 = 2;
/// The service's inbound queue is full; the request was dropped, retry later.
pub const BUSY: u32 = 3;
/// The handler failed (panicked); the session stays open.
pub const INTERNAL: u32 = 4;
/// `Hello.client_version` has a major version the server does not speak.
pub const VERSION_MISMATCH: u32 = 5;
/// The opcode is server-internal (`no_client`) or not allowed now.
pub const NOT_ALLOWED: u32 = 6;
/// `Say` to a room the session has not joined.
pub const NOT_MEMBER: u32 = 7;
/// The frame passed one of the session's rate limits (`[limits]`) and was not handled.
pub const RATE_LIMITED: u32 = 8;
/// `Resume` refused: unknown or closed session, bad token, or a `last_received_seq` ahead of what
/// the server sent. The socket closes; start a new session with `Hello`.
pub const RESUME_REJECTED: u32 = 9;
/// The logic node that owns the request became unreachable before answering (its link down past
/// `cluster.link_down_grace_ms`; it may have handled the request), or no logic node is live.
/// Retry; after a node left, log in again (the request is then routed to a live node).
pub const NODE_UNAVAILABLE: u32 = 10;

// Account and icon codes use 50 and above (the range of their opcodes), so other features can add
// codes below 50 without renumbering.

/// An account name shorter than `account.account_min_len` characters.
pub const ACCOUNT_TOO_SHORT: u32 = 50;
/// An account name longer than `account.account_max_len` characters.
pub const ACCOUNT_TOO_LONG: u32 = 51;
/// An account name with a character other than ASCII letters, digits and `account.account_symbols`, or
/// not starting with a letter or digit.
pub const ACCOUNT_BAD_CHARS: u32 = 52;
/// A password shorter than `account.password_min_len` characters.
pub const PASSWORD_TOO_SHORT: u32 = 53;
/// A password longer than `account.password_max_len` bytes.
pub const PASSWORD_TOO_LONG: u32 = 54;
/// A password with a control character (or, with `account.password_ascii_only`, a character outside
/// printable ASCII).
pub const PASSWORD_BAD_CHARS: u32 = 55;
/// A nickname shorter than `account.nickname_min_len` characters.
pub const NICKNAME_TOO_SHORT: u32 = 56;
/// A nickname longer than `account.nickname_max_len` characters.
pub const NICKNAME_TOO_LONG: u32 = 57;
/// A nickname with a control or invisible (format) character, whitespace at either end, or a space
/// when `account.nickname_spaces` is false.
pub const NICKNAME_BAD_CHARS: u32 = 58;
/// `Register` of an account name that is taken (names compare case-insensitively).
pub const ACCOUNT_EXISTS: u32 = 59;
/// No such account, or a wrong password (one code for both, so names cannot be probed).
pub const WRONG_CREDENTIALS: u32 = 60;
/// Too many failed logins for this account recently; retry after the lock-out.
pub const ACCOUNT_LOCKED: u32 = 61;
/// Too many failed logins from this address recently; retry after the lock-out.
pub const IP_LOCKED: u32 = 62;
/// A session token that is malformed or whose signature does not verify.
pub const TOKEN_INVALID: u32 = 63;
/// A session token past its expiry.
pub const TOKEN_EXPIRED: u32 = 64;
/// A session token issued before the account's last password change.
pub const TOKEN_REVOKED: u32 = 65;
/// A request that needs a logged-in session, on a session that is not.
pub const NOT_LOGGED_IN: u32 = 66;
/// `Login`/`TokenLogin` on a session that is already logged in (`Logout` first).
pub const ALREADY_LOGGED_IN: u32 = 67;
/// `Kicked.code`: the account logged in on another session.
pub const LOGGED_IN_ELSEWHERE: u32 = 68;
/// No unique id can be issued now (the machine-id lease is unconfirmed); retry later.
pub const IDS_UNAVAILABLE: u32 = 69;
/// `GetIcon` of an id the server does not have.
pub const ICON_NOT_FOUND: u32 = 70;

/// Every code with its name, in code order (used by the TypeScript exporter and docs).
pub const ALL: [(u32, &str); 31] = [
    (BAD_REQUEST, "BAD_REQUEST"),
    (UNKNOWN_OPCODE, "UNKNOWN_OPCODE"),
    (BUSY, "BUSY"),
    (INTERNAL, "INTERNAL"),
    (VERSION_MISMATCH, "VERSION_MISMATCH"),
    (NOT_ALLOWED, "NOT_ALLOWED"),
    (NOT_MEMBER, "NOT_MEMBER"),
    (RATE_LIMITED, "RATE_LIMITED"),
    (RESUME_REJECTED, "RESUME_REJECTED"),
    (NODE_UNAVAILABLE, "NODE_UNAVAILABLE"),
    (ACCOUNT_TOO_SHORT, "ACCOUNT_TOO_SHORT"),
    (ACCOUNT_TOO_LONG, "ACCOUNT_TOO_LONG"),
    (ACCOUNT_BAD_CHARS, "ACCOUNT_BAD_CHARS"),
    (PASSWORD_TOO_SHORT, "PASSWORD_TOO_SHORT"),
    (PASSWORD_TOO_LONG, "PASSWORD_TOO_LONG"),
    (PASSWORD_BAD_CHARS, "PASSWORD_BAD_CHARS"),
    (NICKNAME_TOO_SHORT, "NICKNAME_TOO_SHORT"),
    (NICKNAME_TOO_LONG, "NICKNAME_TOO_LONG"),
    (NICKNAME_BAD_CHARS, "NICKNAME_BAD_CHARS"),
    (ACCOUNT_EXISTS, "ACCOUNT_EXISTS"),
    (WRONG_CREDENTIALS, "WRONG_CREDENTIALS"),
    (ACCOUNT_LOCKED, "ACCOUNT_LOCKED"),
    (IP_LOCKED, "IP_LOCKED"),
    (TOKEN_INVALID, "TOKEN_INVALID"),
    (TOKEN_EXPIRED, "TOKEN_EXPIRED"),
    (TOKEN_REVOKED, "TOKEN_REVOKED"),
    (NOT_LOGGED_IN, "NOT_LOGGED_IN"),
    (ALREADY_LOGGED_IN, "ALREADY_LOGGED_IN"),
    (LOGGED_IN_ELSEWHERE, "LOGGED_IN_ELSEWHERE"),
    (IDS_UNAVAILABLE, "IDS_UNAVAILABLE"),
    (ICON_NOT_FOUND, "ICON_NOT_FOUND"),
];

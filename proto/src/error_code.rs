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

/// Every code with its name, in code order (used by the TypeScript exporter and docs).
pub const ALL: [(u32, &str); 9] = [
    (BAD_REQUEST, "BAD_REQUEST"),
    (UNKNOWN_OPCODE, "UNKNOWN_OPCODE"),
    (BUSY, "BUSY"),
    (INTERNAL, "INTERNAL"),
    (VERSION_MISMATCH, "VERSION_MISMATCH"),
    (NOT_ALLOWED, "NOT_ALLOWED"),
    (NOT_MEMBER, "NOT_MEMBER"),
    (RATE_LIMITED, "RATE_LIMITED"),
    (RESUME_REJECTED, "RESUME_REJECTED"),
];

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

/// Every code with its name, in code order (used by the TypeScript exporter and docs).
pub const ALL: [(u32, &str); 7] = [
    (BAD_REQUEST, "BAD_REQUEST"),
    (UNKNOWN_OPCODE, "UNKNOWN_OPCODE"),
    (BUSY, "BUSY"),
    (INTERNAL, "INTERNAL"),
    (VERSION_MISMATCH, "VERSION_MISMATCH"),
    (NOT_ALLOWED, "NOT_ALLOWED"),
    (NOT_MEMBER, "NOT_MEMBER"),
];

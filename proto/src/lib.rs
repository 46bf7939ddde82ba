//! Lattice protocol messages, generated from the `.proto` files in `proto/proto/`.
//!
//! What this crate gives:
//! - [`pb`]: the prost message types (`pb::Hello`, `pb::Login`, ...);
//! - the opcode registry: [`opcode`] constants, [`info`] (opcode → name and flags), [`LatticeMessage`]
//!   (type → opcode), [`AnyMessage`] and [`decode`] (opcode + body → message);
//! - [`error_code`]: the `Error.code` values of docs/PROTOCOL.md;
//! - [`version`]: the packed `major.minor.revision-stage` protocol version;
//! - [`icons`]: the icon description file's parser (`proto/icons/icons.txt`);
//! - the TypeScript client files that the `lattice-proto gen-ts --out DIR` command writes.
//!
//! What it never does: I/O, framing, compression or logging. The frame codec and the gate (which
//! rejects `no_client` opcodes and honours the no-log flags) live in `lattice-wire` / `lattice-server`.
//!
//! Opcodes are explicit (`option (lattice.opcode) = N;`) and frozen in `proto/opcodes.lock`: the build
//! fails on a duplicate, a missing or a moved opcode.
#![warn(missing_docs)]

mod body_buf;
pub mod error_code;
mod fast_decode;
pub mod icons;
#[cfg(test)]
mod lockfile;
pub mod ts;
pub mod version;

/// The prost message types, one per message of `proto/proto/lattice/*.proto` (package `lattice`).
///
/// Messages marked `no_log_request` / `no_log_response` have a `Debug` that prints no field
/// (`Login { .. }`), so a stray `{:?}` cannot leak a password.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/lattice.rs"));
}

include!(concat!(env!("OUT_DIR"), "/registry.rs"));

/// The encoded `google.protobuf.FileDescriptorSet` of every `.proto` file (with imports), for
/// code that maps messages by their descriptors (e.g. to and from JSON), such as the server's
/// HTTP RPC route.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// Name and flags of one opcode, from the message's options in its `.proto` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpcodeInfo {
    /// The frame opcode.
    pub opcode: u16,
    /// Dense position of the message in [`all`] (`0..COUNT`), for tables indexed by message.
    pub index: u16,
    /// The message name without package, e.g. `"Login"`.
    pub name: &'static str,
    /// The fully-qualified protobuf name, e.g. `"lattice.Login"`.
    pub full_name: &'static str,
    /// The server must not log the body when it receives this message as a request.
    pub no_log_request: bool,
    /// The server must not log the body when it sends this message as a response.
    pub no_log_response: bool,
    /// Server-internal: a client frame with this opcode is rejected (`NOT_ALLOWED`) and counted.
    pub no_client: bool,
}

impl OpcodeInfo {
    /// `false` when either no-log flag is set: the body may then be logged in no direction
    /// (the conservative reading for a logger that does not track direction).
    pub fn may_log_body(&self) -> bool {
        !(self.no_log_request || self.no_log_response)
    }
}

/// Looks up an opcode. `None` for an opcode no message has (the gate answers `UNKNOWN_OPCODE`).
///
/// Cost: one bounds check and two indexed loads ([`BY_OPCODE`], then the registry); no search,
/// no allocation. It runs at least twice per request (the gate, the per-opcode metrics), where
/// the binary search it replaced cost ≈ 33 instructions per call over 29 messages.
pub fn info(opcode: u16) -> Option<&'static OpcodeInfo> {
    match BY_OPCODE.get(usize::from(opcode)) {
        Some(&i) if i != NO_MESSAGE => Some(&INFOS[usize::from(i)]),
        _ => None,
    }
}

/// The largest registered opcode (the length of [`BY_OPCODE`] minus one).
const MAX_OPCODE: usize = max_opcode(&INFO_TABLE);

/// [`BY_OPCODE`]'s mark for an opcode no message has.
const NO_MESSAGE: u16 = u16::MAX;

/// Opcode → position in the registry ([`NO_MESSAGE`] for none), built at compile time. Two bytes
/// per opcode up to the largest registered one (2 kB with opcodes up to 1000; at most 128 KiB,
/// since opcodes are `u16`); a lookup touches one cache line of it.
static BY_OPCODE: [u16; MAX_OPCODE + 1] = opcode_index(&INFO_TABLE);

const fn max_opcode(table: &[OpcodeInfo]) -> usize {
    let mut max = 0;
    let mut i = 0;
    while i < table.len() {
        if table[i].opcode as usize > max {
            max = table[i].opcode as usize;
        }
        i += 1;
    }
    max
}

const fn opcode_index(table: &[OpcodeInfo]) -> [u16; MAX_OPCODE + 1] {
    // The build refuses duplicate opcodes (proto/opcodes.lock), so each slot is set at most once;
    // a registry that outgrew u16 positions would fail here at compile time.
    assert!(
        table.len() < NO_MESSAGE as usize,
        "too many messages for a u16 index"
    );
    let mut by = [NO_MESSAGE; MAX_OPCODE + 1];
    let mut i = 0;
    while i < table.len() {
        by[table[i].opcode as usize] = i as u16;
        i += 1;
    }
    by
}

/// Every registered opcode, sorted by opcode.
pub fn all() -> &'static [OpcodeInfo] {
    &INFOS
}

/// A message type that has an opcode. Implemented by the build for every such generated type.
pub trait LatticeMessage: prost::Message + Default + Into<AnyMessage> {
    /// The frame opcode of this message.
    const OPCODE: u16;
    /// The message name without package.
    const NAME: &'static str;

    /// The message held by `m`, if it is a `Self` (generated: one `match`).
    fn from_any(m: AnyMessage) -> Option<Self>;

    /// The registry entry of this message (flags included).
    fn info() -> &'static OpcodeInfo {
        info(Self::OPCODE).expect("every LatticeMessage is in the registry")
    }
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No message has this opcode (`Error.code` = [`error_code::UNKNOWN_OPCODE`]).
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// The body is not a valid encoding of the opcode's message (`Error.code` = [`error_code::BAD_REQUEST`]).
    #[error("body of opcode {opcode} ({name}) does not decode: {source}")]
    Body {
        /// The frame's opcode.
        opcode: u16,
        /// The message expected for it.
        name: &'static str,
        /// prost's reason.
        source: prost::DecodeError,
    },
}

impl DecodeError {
    /// The `Error.code` the server answers with for this failure.
    pub fn error_code(&self) -> u32 {
        match self {
            DecodeError::UnknownOpcode(_) => error_code::UNKNOWN_OPCODE,
            DecodeError::Body { .. } => error_code::BAD_REQUEST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn info_by_index_agrees_with_the_registry_for_every_opcode() {
        let mut found = 0;
        for op in 0..=u16::MAX {
            let scanned = INFOS.iter().find(|i| i.opcode == op);
            assert_eq!(info(op), scanned, "opcode {op}");
            found += usize::from(scanned.is_some());
        }
        assert_eq!(found, COUNT, "every registered opcode is found");
        assert!(info(0).is_none(), "no message has opcode 0");
        assert!(info(u16::MAX).is_none());
        assert_eq!(info(opcode::PING).map(|i| i.name), Some("Ping"));
    }

    #[test]
    fn opcodes_match_protocol_md() {
        let expected: [(u16, &str); 34] = [
            (1, "Hello"),
            (2, "Welcome"),
            (3, "Error"),
            (4, "Ping"),
            (5, "Pong"),
            (10, "JoinRoom"),
            (11, "Joined"),
            (12, "Say"),
            (13, "Said"),
            (20, "Login"),
            (21, "LoginOk"),
            (30, "Resume"),
            (31, "Resumed"),
            (32, "Ack"),
            (50, "Register"),
            (51, "RegisterOk"),
            (52, "TokenLogin"),
            (53, "ChangePassword"),
            (54, "PasswordChanged"),
            (55, "ChangeNickname"),
            (56, "NicknameChanged"),
            (57, "Logout"),
            (58, "LoggedOut"),
            (59, "Kicked"),
            (60, "ProfileChanged"),
            (70, "IconManifest"),
            (71, "GetIcon"),
            (72, "IconData"),
            (1000, "Relay"),
            (1001, "LinkHello"),
            (1002, "LinkWelcome"),
            (1003, "LinkRequest"),
            (1004, "LinkDeliver"),
            (1005, "LinkSessionClosed"),
        ];
        let got: Vec<(u16, &str)> = all().iter().map(|i| (i.opcode, i.name)).collect();
        assert_eq!(got, expected);
        assert_eq!(opcode::JOIN_ROOM, 10);
        assert_eq!(opcode::LOGIN_OK, 21);
        assert_eq!(<pb::Ping as LatticeMessage>::OPCODE, opcode::PING);
        assert_eq!(pb::Said::info().full_name, "lattice.Said");
    }

    #[test]
    fn flags_come_from_the_proto_options() {
        let login = info(opcode::LOGIN).expect("registered");
        assert!(login.no_log_request && !login.no_log_response && !login.no_client);
        assert!(!login.may_log_body());
        // Every message that carries a password or a token is never logged.
        for op in [
            opcode::REGISTER,
            opcode::TOKEN_LOGIN,
            opcode::CHANGE_PASSWORD,
        ] {
            assert!(info(op).expect("registered").no_log_request, "{op}");
        }
        for op in [opcode::LOGIN_OK, opcode::PASSWORD_CHANGED] {
            assert!(info(op).expect("registered").no_log_response, "{op}");
        }
        let relay = info(opcode::RELAY).expect("registered");
        assert!(relay.no_client && relay.may_log_body());
        let ping = info(opcode::PING).expect("registered");
        assert!(!ping.no_client && ping.may_log_body());
        assert_eq!(info(0), None);
        assert_eq!(info(9), None);
        assert_eq!(info(u16::MAX), None);
    }

    #[test]
    fn decode_by_opcode_round_trips() {
        let said = pb::Said {
            room: "lobby".into(),
            from: u64::MAX,
            text: "héllo".into(),
        };
        let any: AnyMessage = said.clone().into();
        assert_eq!(any.opcode(), opcode::SAID);
        let mut body = Vec::new();
        any.encode_body(&mut body);
        assert_eq!(body.len(), any.encoded_len());
        assert_eq!(body, said.encode_to_vec());
        assert_eq!(decode(opcode::SAID, &body).expect("decodes"), any);
        // Empty body = every field at its default.
        assert_eq!(
            decode(opcode::PING, &[]).expect("empty body"),
            AnyMessage::Ping(pb::Ping::default())
        );
    }

    #[test]
    fn decode_failures_are_typed() {
        let err = decode(999, &[]).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownOpcode(999)));
        assert_eq!(err.error_code(), error_code::UNKNOWN_OPCODE);
        // Field 1 (length-delimited) claiming 100 bytes that are not there.
        let err = decode(opcode::HELLO, &[0x0a, 100, 1]).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Body {
                    opcode: 1,
                    name: "Hello",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.error_code(), error_code::BAD_REQUEST);
    }

    #[test]
    fn no_log_messages_never_print_their_fields() {
        let login = pb::Login {
            account: "alice".into(),
            password: "hunter2-secret".into(),
        };
        for text in [
            format!("{login:?}"),
            format!("{login:#?}"),
            format!("{:?}", AnyMessage::from(login.clone())),
        ] {
            assert!(!text.contains("hunter2-secret"), "{text}");
            assert!(!text.contains("alice"), "{text}");
            assert!(text.contains("Login"), "{text}");
        }
        let ok = pb::LoginOk {
            user_id: 7,
            session_token: b"token-secret".to_vec(),
            token_expires_ms: 1,
            profile: None,
        };
        assert!(!format!("{ok:?}").contains("116"), "token bytes leaked");
        let ch = pb::ChangePassword {
            old_password: "old-secret".into(),
            new_password: "new-secret".into(),
        };
        assert!(!format!("{ch:?}").contains("secret"));
        // Other messages keep a normal Debug.
        assert!(format!(
            "{:?}",
            pb::JoinRoom {
                room: "lobby".into()
            }
        )
        .contains("lobby"));
    }
}

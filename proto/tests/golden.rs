//! Golden vectors shared with the TypeScript client (proto/ts-test/golden/):
//! - `rust-frames.json` is written from the table below; this test fails if the committed file
//!   differs (set `LATTICE_UPDATE_GOLDEN=1` to rewrite it). The TS tests decode every frame in it
//!   and re-encode the uncompressed ones byte for byte.
//! - `ts-frames.json` is written by the TS tests (same names); this test decodes every frame in it
//!   with prost and flate2 and compares with the table.
//!
//! Frames follow docs/PROTOCOL.md; the 12-byte header is parsed here by hand on purpose, so the
//! vectors check the document, not one implementation of it.

use std::io::{Read, Write};
use std::path::PathBuf;

use lattice_proto::{decode, error_code, pb, AnyMessage};
use serde_json::{json, Value};

const FLAG_COMPRESSED: u16 = 1;

struct Vector {
    name: &'static str,
    request_id: u32,
    compress: bool,
    message: AnyMessage,
    /// The message as the TS client sees it: camelCase fields, 64-bit as decimal strings, bytes as hex.
    ts: Value,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() & 1 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn long_text() -> String {
    "Lattice chat line, repeated to pass the compression threshold. ".repeat(40)
}

fn vectors() -> Vec<Vector> {
    let bytes: Vec<u8> = (0..=255u8).collect();
    vec![
        Vector {
            name: "protocol_md_ping",
            request_id: 7,
            compress: false,
            message: pb::Ping {
                payload: b"hi".to_vec(),
            }
            .into(),
            ts: json!({"payload": "6869"}),
        },
        Vector {
            name: "hello",
            request_id: 1,
            compress: false,
            message: pb::Hello {
                client_version: "1.0.0-alpha".into(),
                resume: false,
            }
            .into(),
            ts: json!({"clientVersion": "1.0.0-alpha", "resume": false}),
        },
        Vector {
            name: "hello_resume",
            request_id: 1,
            compress: false,
            message: pb::Hello {
                client_version: "1.1.0-alpha".into(),
                resume: true,
            }
            .into(),
            ts: json!({"clientVersion": "1.1.0-alpha", "resume": true}),
        },
        Vector {
            name: "welcome_resume_token",
            request_id: 1,
            compress: false,
            message: pb::Welcome {
                server_version: "1.1.0-alpha".into(),
                session_id: 0,
                resume_token: (1..=16).collect(),
            }
            .into(),
            ts: json!({"serverVersion": "1.1.0-alpha", "sessionId": "0", "resumeToken": "0102030405060708090a0b0c0d0e0f10"}),
        },
        Vector {
            name: "resume",
            request_id: 1,
            compress: false,
            message: pb::Resume {
                session_id: (1 << 56) | 7,
                token: vec![0xab; 16],
                last_received_seq: u32::MAX,
                attempt: 3,
            }
            .into(),
            ts: json!({"sessionId": "72057594037927943", "token": "abababababababababababababababab", "lastReceivedSeq": 4294967295u32, "attempt": 3}),
        },
        Vector {
            name: "resumed_resync",
            request_id: 1,
            compress: false,
            message: pb::Resumed {
                resume_token: vec![0xcd; 16],
                last_received_seq: 12,
                server_seq: 300,
                resync: true,
            }
            .into(),
            ts: json!({"resumeToken": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd", "lastReceivedSeq": 12, "serverSeq": 300, "resync": true}),
        },
        Vector {
            name: "welcome",
            request_id: 1,
            compress: false,
            message: pb::Welcome {
                server_version: "1.2.3-release".into(),
                session_id: 0x0123_4567_89ab_cdef,
                resume_token: vec![],
            }
            .into(),
            ts: json!({"serverVersion": "1.2.3-release", "sessionId": "81985529216486895", "resumeToken": ""}),
        },
        Vector {
            name: "error_version_mismatch",
            request_id: 1,
            compress: false,
            message: pb::Error {
                code: error_code::VERSION_MISMATCH,
                message: "client major 2, server speaks 1".into(),
                opcode: 1,
            }
            .into(),
            ts: json!({"code": 5, "message": "client major 2, server speaks 1", "opcode": 1}),
        },
        Vector {
            name: "pong_empty",
            request_id: 9,
            compress: false,
            message: pb::Pong::default().into(),
            ts: json!({"payload": ""}),
        },
        Vector {
            name: "join_room",
            request_id: 2,
            compress: false,
            message: pb::JoinRoom {
                room: "lobby".into(),
            }
            .into(),
            ts: json!({"room": "lobby"}),
        },
        Vector {
            name: "joined",
            request_id: 2,
            compress: false,
            message: pb::Joined {
                room: "lobby".into(),
                members: 300,
            }
            .into(),
            ts: json!({"room": "lobby", "members": 300}),
        },
        Vector {
            name: "say_unicode",
            request_id: 3,
            compress: false,
            message: pb::Say {
                room: "大厅".into(),
                text: "你好, world 🎮".into(),
            }
            .into(),
            ts: json!({"room": "大厅", "text": "你好, world 🎮"}),
        },
        Vector {
            name: "said_push_max_from",
            request_id: 0,
            compress: false,
            message: pb::Said {
                room: "lobby".into(),
                from: u64::MAX,
                text: "hi".into(),
            }
            .into(),
            ts: json!({"room": "lobby", "from": "18446744073709551615", "text": "hi"}),
        },
        Vector {
            name: "login",
            request_id: 4,
            compress: false,
            message: pb::Login {
                account: "alice".into(),
                password: "s3cret".into(),
            }
            .into(),
            ts: json!({"account": "alice", "password": "s3cret"}),
        },
        Vector {
            name: "login_ok_above_2_pow_53",
            request_id: 4,
            compress: false,
            message: pb::LoginOk {
                user_id: (1 << 53) + 1,
                session_token: vec![1, 2, 3, 0xff],
                token_expires_ms: 1_800_000_000_000,
                profile: None,
            }
            .into(),
            ts: json!({"userId": "9007199254740993", "sessionToken": "010203ff",
                       "tokenExpiresMs": "1800000000000", "profile": null}),
        },
        Vector {
            name: "ping_all_bytes_max_request_id",
            request_id: u32::MAX,
            compress: false,
            message: pb::Ping {
                payload: bytes.clone(),
            }
            .into(),
            ts: json!({"payload": hex(&bytes)}),
        },
        Vector {
            name: "said_compressed",
            request_id: 0,
            compress: true,
            message: pb::Said {
                room: "lobby".into(),
                from: 42,
                text: long_text(),
            }
            .into(),
            ts: json!({"room": "lobby", "from": "42", "text": long_text()}),
        },
    ]
}

fn frame(opcode: u16, flags: u16, request_id: u32, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(12 + body.len()).expect("small frame");
    let mut f = Vec::with_capacity(12 + body.len());
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(&opcode.to_le_bytes());
    f.extend_from_slice(&flags.to_le_bytes());
    f.extend_from_slice(&request_id.to_le_bytes());
    f.extend_from_slice(body);
    f
}

fn encode(v: &Vector) -> Vec<u8> {
    let mut body = Vec::new();
    v.message.encode_body(&mut body);
    if v.compress {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&body).expect("in-memory write");
        let z = z.finish().expect("in-memory finish");
        assert!(
            z.len() < body.len(),
            "{}: compression must shrink the body",
            v.name
        );
        frame(v.message.opcode(), FLAG_COMPRESSED, v.request_id, &z)
    } else {
        frame(v.message.opcode(), 0, v.request_id, &body)
    }
}

/// Parses one frame per docs/PROTOCOL.md and decodes its body.
fn parse(bytes: &[u8]) -> Result<(u16, u16, u32, AnyMessage), String> {
    if bytes.len() < 12 {
        return Err(format!("{} bytes is shorter than the header", bytes.len()));
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if len != bytes.len() {
        return Err(format!("length field {len}, frame has {}", bytes.len()));
    }
    let opcode = u16::from_le_bytes(bytes[4..6].try_into().expect("2 bytes"));
    let flags = u16::from_le_bytes(bytes[6..8].try_into().expect("2 bytes"));
    let request_id = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if flags & !FLAG_COMPRESSED != 0 {
        return Err(format!("reserved flag bits {flags:#06x}"));
    }
    let mut body = bytes[12..].to_vec();
    if flags & FLAG_COMPRESSED != 0 {
        let mut plain = Vec::new();
        flate2::read::ZlibDecoder::new(&body[..])
            .take(1 << 20)
            .read_to_end(&mut plain)
            .map_err(|e| format!("inflate: {e}"))?;
        body = plain;
    }
    let message = decode(opcode, &body).map_err(|e| e.to_string())?;
    Ok((opcode, flags, request_id, message))
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ts-test/golden")
}

#[test]
fn protocol_md_example_is_exact() {
    let v = &vectors()[0];
    assert_eq!(
        hex(&encode(v)),
        "100000000400000007000000".to_string() + "0a026869"
    );
}

#[test]
fn rust_frames_match_committed_golden_file() {
    let entries: Vec<Value> = vectors()
        .iter()
        .map(|v| {
            let f = encode(v);
            let (opcode, flags, request_id, message) = parse(&f).expect("own frame parses");
            assert_eq!(
                (opcode, request_id, &message),
                (v.message.opcode(), v.request_id, &v.message)
            );
            json!({
                "name": v.name,
                "opcode": opcode,
                "flags": flags,
                "requestId": request_id,
                "message": v.ts,
                "frame": hex(&f),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&json!({
        "comment": "Frames encoded by Rust (proto/tests/golden.rs). Regenerate with LATTICE_UPDATE_GOLDEN=1 cargo test -p lattice-proto --test golden",
        "vectors": entries,
    }))
    .expect("serialise")
        + "\n";
    let path = golden_dir().join("rust-frames.json");
    if std::env::var("LATTICE_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).expect("create golden dir");
        std::fs::write(&path, &text).expect("write golden file");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate it with LATTICE_UPDATE_GOLDEN=1 cargo test -p lattice-proto --test golden",
            path.display()
        )
    });
    assert!(
        committed == text,
        "{} is stale: the Rust encoding changed. If intended, rerun with LATTICE_UPDATE_GOLDEN=1 and \
         re-run the TS tests (deploy/ci/ts.sh)",
        path.display()
    );
}

#[test]
fn ts_frames_decode_in_rust() {
    let path = golden_dir().join("ts-frames.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; it is written by the TypeScript tests: run `LATTICE_UPDATE_GOLDEN=1 deploy/ci/ts.sh` \
             (needs node 20 + npm)",
            path.display()
        )
    });
    let doc: Value = serde_json::from_str(&text).expect("ts-frames.json is JSON");
    let got = doc["vectors"].as_array().expect("vectors array");
    let table = vectors();
    assert_eq!(got.len(), table.len(), "every vector is encoded by TS");
    for v in &table {
        let entry = got
            .iter()
            .find(|e| e["name"] == v.name)
            .unwrap_or_else(|| panic!("ts-frames.json has no vector {}", v.name));
        let bytes = unhex(entry["frame"].as_str().expect("frame hex"));
        let (opcode, flags, request_id, message) =
            parse(&bytes).unwrap_or_else(|e| panic!("{}: TS frame does not parse: {e}", v.name));
        assert_eq!(opcode, v.message.opcode(), "{}", v.name);
        assert_eq!(request_id, v.request_id, "{}", v.name);
        assert_eq!(message, v.message, "{}", v.name);
        assert_eq!(
            flags & FLAG_COMPRESSED != 0,
            v.compress,
            "{}: compressed flag",
            v.name
        );
        if !v.compress {
            assert_eq!(
                bytes,
                encode(v),
                "{}: TS bytes differ from Rust bytes",
                v.name
            );
        }
    }
}

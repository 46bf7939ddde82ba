//! `POST /rpc/{MessageName}`: one request message handled by the same handlers as the frame
//! protocol, its reply as the response body.
//!
//! The body is the message, encoded as protobuf (`Content-Type: application/x-protobuf`) or JSON
//! (`application/json`, the protobuf JSON mapping through the message descriptors:
//! `lattice_proto::FILE_DESCRIPTOR_SET`), so `curl` works:
//!
//! ```text
//! curl -d '{"payload":"aGk="}' -H 'Content-Type: application/json' http://127.0.0.1:7102/rpc/Ping
//! {"payload":"aGk="}
//! ```
//!
//! The request goes to the service host as a frame with a request id of this shard's choosing;
//! the session (`lattice_wire::Session::expect_reply`) keeps the first frame queued to it with
//! that id, and [`Rpc::finish`] turns it into the response: `200` with the reply message, or the
//! status an `Error` reply maps to, in the request's encoding; `X-Lattice-Message` names the
//! reply's message. No `Hello` is needed (each request stands alone); pushes to an HTTP session
//! (e.g. `Said` to a room it joined) have no channel and are dropped, counted.

use std::sync::OnceLock;
use std::time::Duration;

use lattice_proto::{error_code, opcode, AnyMessage, OpcodeInfo};
use lattice_runtime::ShardCx;
use lattice_wire::frame::{parse_header, FrameHeader, HEADER_LEN};
use lattice_wire::http::{Request, Response};
use lattice_wire::{RpcReply, SessionId};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

use crate::host::ServiceHost;
use crate::service::{Encoder, ShardMsg};

/// How the request body was encoded, and so the response's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf = 0,
    Json = 1,
}

impl Format {
    fn from_tag(tag: u32) -> Format {
        if tag == Format::Json as u32 {
            Format::Json
        } else {
            Format::Protobuf
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// The descriptor pool, decoded once per process (read-only afterwards).
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(lattice_proto::FILE_DESCRIPTOR_SET)
            .expect("the build wrote a valid descriptor set")
    })
}

fn descriptor(full_name: &str) -> Option<MessageDescriptor> {
    pool().get_message_by_name(full_name)
}

/// The RPC route of one shard.
pub struct Rpc {
    timeout: Duration,
    next_rid: u32,
    inflated: Vec<u8>,
}

impl Rpc {
    /// RPCs that wait `timeout` for their reply (then the session answers `504`).
    pub fn new(timeout: Duration) -> Rpc {
        Rpc {
            timeout,
            next_rid: 0,
            inflated: Vec::new(),
        }
    }

    /// Decodes the request and hands it to the service host. `Err` is the response to send at
    /// once (bad name, media type or body).
    pub fn start(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        host: &mut ServiceHost,
        session: SessionId,
        req: &Request,
    ) -> Result<(), Response> {
        let name = &req.path["/rpc/".len()..];
        let Some(info) = lattice_proto::all().iter().find(|i| i.name == name) else {
            return Err(Response::text(404, format!("no message named {name:?}\n")));
        };
        let may_internal = cx
            .inspect_session(session, |s| s.session_type().may_send_internal())
            .unwrap_or(false);
        if info.no_client && !may_internal {
            return Err(Response::text(403, format!("{name} is server-internal\n")));
        }
        if info.opcode == opcode::HELLO || info.opcode == opcode::RESUME {
            return Err(Response::text(
                400,
                format!("{name} opens frame sessions; /rpc needs no handshake\n"),
            ));
        }
        let mut types = req.headers.iter().filter(|(k, _)| k == "content-type");
        let ct = types.next().map_or("", |(_, v)| v.as_str());
        if types.next().is_some() {
            return Err(Response::text(400, "Content-Type given more than once\n"));
        }
        let media = ct.split(';').next().unwrap_or_default().trim();
        let format = match media.to_ascii_lowercase().as_str() {
            "application/json" => Format::Json,
            "application/x-protobuf" | "application/protobuf" | "application/octet-stream" => {
                Format::Protobuf
            }
            _ => {
                return Err(Response::text(
                    415,
                    "send Content-Type: application/json or application/x-protobuf\n",
                ))
            }
        };
        if !info.no_client && !host.takes(info) {
            // A server-to-client message: the host answers NOT_ALLOWED (403) whatever the body,
            // so it is not decoded (an empty body is its default).
            let body = Vec::new();
            let msg = lattice_proto::decode(info.opcode, &body)
                .map_err(|e| Response::text(400, format!("{e}\n")))?;
            return self.hand_over(cx, host, session, info, format, body, msg);
        }
        let body = match format {
            Format::Protobuf => req.body.clone(),
            Format::Json => json_to_protobuf(info.full_name, &req.body)
                .map_err(|e| Response::text(400, format!("bad JSON for {name}: {e}\n")))?,
        };
        let msg = lattice_proto::decode(info.opcode, &body)
            .map_err(|e| Response::text(400, format!("{e}\n")))?;
        self.hand_over(cx, host, session, info, format, body, msg)
    }

    /// Hands the decoded request to the host under a fresh request id the reply will carry.
    #[allow(clippy::too_many_arguments)]
    fn hand_over(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        host: &mut ServiceHost,
        session: SessionId,
        info: &'static OpcodeInfo,
        format: Format,
        body: Vec<u8>,
        msg: AnyMessage,
    ) -> Result<(), Response> {
        self.next_rid = self.next_rid.wrapping_add(1).max(1);
        let rid = self.next_rid;
        let deadline = cx.now().saturating_add(self.timeout);
        let expected = cx
            .with_session(session, |s| s.expect_reply(rid, format as u32, deadline))
            .unwrap_or(false);
        if !expected {
            return Err(Response::text(500, "the connection cannot take a reply\n"));
        }
        let header = FrameHeader {
            length: (HEADER_LEN + body.len()) as u32,
            opcode: info.opcode,
            flags: 0,
            request_id: rid,
            seq: 0,
            ack: 0,
        };
        host.request(cx, session, header, info, msg);
        Ok(())
    }

    /// The response for a reply frame.
    pub fn finish(&mut self, enc: &mut Encoder, reply: &RpcReply) -> Response {
        let format = Format::from_tag(reply.tag);
        let header = match parse_header(&reply.frame, u32::MAX) {
            Ok(Some(h)) if h.length as usize == reply.frame.len() => h,
            _ => return Response::text(500, "malformed reply frame\n"),
        };
        let body = &reply.frame[HEADER_LEN..];
        let body: &[u8] = if header.compressed() {
            self.inflated.clear();
            if let Err(e) = enc.compressor.inflate(body, &mut self.inflated) {
                return Response::text(500, format!("reply does not inflate: {e}\n"));
            }
            &self.inflated
        } else {
            body
        };
        let Some(info) = lattice_proto::info(header.opcode) else {
            return Response::text(
                500,
                format!("reply with unknown opcode {}\n", header.opcode),
            );
        };
        let status = match lattice_proto::decode(header.opcode, body) {
            Ok(AnyMessage::Error(e)) => status_of(e.code),
            Ok(_) => 200,
            Err(e) => return Response::text(500, format!("reply does not decode: {e}\n")),
        };
        let out = match format {
            Format::Protobuf => body.to_vec(),
            Format::Json => match protobuf_to_json(info.full_name, body) {
                Ok(j) => j,
                Err(e) => return Response::text(500, format!("reply to JSON: {e}\n")),
            },
        };
        Response::new(status, format.content_type(), out)
            .with_header("X-Lattice-Message", info.name)
    }
}

/// The HTTP status of an `Error` reply's code.
pub fn status_of(code: u32) -> u16 {
    match code {
        error_code::BAD_REQUEST | error_code::VERSION_MISMATCH => 400,
        error_code::UNKNOWN_OPCODE => 404,
        error_code::NOT_ALLOWED => 403,
        error_code::NOT_MEMBER => 409,
        error_code::BUSY => 503,
        error_code::ACCOUNT_TOO_SHORT..=error_code::NICKNAME_BAD_CHARS => 400,
        error_code::ACCOUNT_EXISTS | error_code::ALREADY_LOGGED_IN => 409,
        error_code::WRONG_CREDENTIALS
        | error_code::TOKEN_INVALID
        | error_code::TOKEN_EXPIRED
        | error_code::TOKEN_REVOKED
        | error_code::NOT_LOGGED_IN => 401,
        error_code::ACCOUNT_LOCKED | error_code::IP_LOCKED => 429,
        error_code::IDS_UNAVAILABLE => 503,
        error_code::ICON_NOT_FOUND => 404,
        _ => 500,
    }
}

fn json_to_protobuf(full_name: &str, json: &[u8]) -> Result<Vec<u8>, String> {
    let desc = descriptor(full_name).ok_or_else(|| format!("no descriptor for {full_name}"))?;
    crate::strict_json::no_duplicate_keys(json)?;
    let mut de = serde_json::Deserializer::from_slice(json);
    let msg = DynamicMessage::deserialize(desc, &mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(prost::Message::encode_to_vec(&msg))
}

fn protobuf_to_json(full_name: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let desc = descriptor(full_name).ok_or_else(|| format!("no descriptor for {full_name}"))?;
    let msg = DynamicMessage::decode(desc, body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    msg.serialize_with_options(&mut ser, &SerializeOptions::new())
        .map_err(|e| e.to_string())?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_proto::pb;
    use prost::Message;

    #[test]
    fn json_maps_through_the_descriptors_both_ways() {
        let body = json_to_protobuf("lattice.Ping", br#"{"payload":"aGk="}"#).unwrap();
        assert_eq!(pb::Ping::decode(&body[..]).unwrap().payload, b"hi");
        let said = pb::Said {
            room: "lobby".into(),
            from: u64::MAX,
            text: "héllo".into(),
        };
        let json = protobuf_to_json("lattice.Said", &said.encode_to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["room"], "lobby");
        assert_eq!(
            v["from"],
            u64::MAX.to_string(),
            "64-bit integers as strings"
        );
        assert_eq!(v["text"], "héllo");
        assert!(json_to_protobuf("lattice.Ping", br#"{"nope":1}"#).is_err());
        assert!(json_to_protobuf("lattice.Ping", b"{} trailing").is_err());
        assert!(json_to_protobuf("lattice.Ping", b"[").is_err());
        let dup = json_to_protobuf("lattice.Ping", br#"{"payload":"aGk=","payload":"aGk="}"#);
        assert!(dup.is_err(), "{dup:?}");
    }

    #[test]
    fn error_codes_map_to_statuses() {
        assert_eq!(status_of(error_code::BUSY), 503);
        assert_eq!(status_of(error_code::NOT_MEMBER), 409);
        assert_eq!(status_of(error_code::INTERNAL), 500);
        assert_eq!(status_of(error_code::BAD_REQUEST), 400);
        assert_eq!(status_of(error_code::ACCOUNT_TOO_SHORT), 400);
        assert_eq!(status_of(error_code::NICKNAME_BAD_CHARS), 400);
        assert_eq!(status_of(error_code::ACCOUNT_EXISTS), 409);
        assert_eq!(status_of(error_code::WRONG_CREDENTIALS), 401);
        assert_eq!(status_of(error_code::NOT_LOGGED_IN), 401);
        assert_eq!(status_of(error_code::IP_LOCKED), 429);
        assert_eq!(status_of(error_code::ICON_NOT_FOUND), 404);
        assert_eq!(status_of(error_code::LOGGED_IN_ELSEWHERE), 500);
    }
}

//! A resumable client, written from docs/PROTOCOL.md ("Resume"): sequence numbers and
//! acknowledgements in the SEQ extension, resends of unacknowledged frames, `Resume` on a new
//! connection. One client over either transport ([`Link`]): binary TCP ([`SeqClient`]) or
//! WebSocket, one frame per binary message ([`super::seq_ws::WsSeqClient`]), both [`SeqSession`].

use std::io::Write;
use std::net::Shutdown;

use lattice_proto::{error_code, opcode, pb, AnyMessage, LatticeMessage};

use super::{take_frame, Client, RawFrame, WsClient, WsMsg};

/// A connection a resumable session runs over.
pub trait Link: Sized {
    /// Opens a new connection to `port` (nothing sent yet).
    fn open(port: u16) -> Self;
    /// Sends a plain message.
    fn send_msg<T: LatticeMessage>(&mut self, rid: u32, msg: &T);
    /// The next frame (panics when the connection closed).
    fn recv_frame(&mut self) -> RawFrame;
    /// The next frame, `None` when the connection closed.
    fn try_recv_frame(&mut self) -> Option<RawFrame>;
    /// Writes one encoded frame (a cut connection is the test's business).
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()>;
    /// Cuts the TCP connection as a network failure would (both directions, no goodbye).
    fn cut(&mut self);
    /// The handshake gave this session id.
    fn welcomed(&mut self, _session_id: u64) {}
}

impl Link for Client {
    fn open(port: u16) -> Self {
        Client::connect_raw(port)
    }
    fn send_msg<T: LatticeMessage>(&mut self, rid: u32, msg: &T) {
        self.send(rid, msg)
    }
    fn recv_frame(&mut self) -> RawFrame {
        self.recv()
    }
    fn try_recv_frame(&mut self) -> Option<RawFrame> {
        self.try_recv()
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.s.write_all(frame)
    }
    fn cut(&mut self) {
        let _ = self.s.shutdown(Shutdown::Both);
    }
}

impl Link for WsClient {
    fn open(port: u16) -> Self {
        WsClient::open(port, "/ws", "").expect("upgrade")
    }
    fn send_msg<T: LatticeMessage>(&mut self, rid: u32, msg: &T) {
        self.send(rid, msg)
    }
    fn recv_frame(&mut self) -> RawFrame {
        self.recv()
    }
    fn try_recv_frame(&mut self) -> Option<RawFrame> {
        match self.next()? {
            WsMsg::Binary(b) => {
                let len = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
                assert_eq!(len, b.len(), "one frame per binary message");
                let mut buf = b;
                Some(take_frame(&mut buf).expect("a whole frame"))
            }
            WsMsg::Close(..) => None,
            WsMsg::Text(t) => panic!("a text message: {t}"),
        }
    }
    fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.try_send_frame(2, frame)
    }
    fn cut(&mut self) {
        let _ = self.s.shutdown(Shutdown::Both);
    }
    fn welcomed(&mut self, session_id: u64) {
        self.session_id = session_id;
    }
}

const FLAG_SEQ: u16 = 0x0002;

/// One frame with the SEQ extension.
pub fn seq_frame(opcode: u16, rid: u32, seq: u32, ack: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((20 + body.len()) as u32).to_le_bytes());
    v.extend_from_slice(&opcode.to_le_bytes());
    v.extend_from_slice(&FLAG_SEQ.to_le_bytes());
    v.extend_from_slice(&rid.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&ack.to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// What a `Resume` got.
#[derive(Debug)]
pub enum Resumption {
    Resumed(pb::Resumed),
    Rejected(pb::Error),
}

/// A resumable session over `L`.
pub struct SeqSession<L: Link> {
    /// The listener's port (binary, or HTTP for WebSocket).
    pub port: u16,
    pub c: L,
    pub session_id: u64,
    pub token: Vec<u8>,
    /// `seq` of the last sequenced frame received.
    pub last_recv: u32,
    /// `seq` of the last frame sent.
    pub last_sent: u32,
    /// Sent and not acknowledged: (seq, the frame as sent).
    pub unacked: Vec<(u32, Vec<u8>)>,
    /// Every sequenced frame received, in order (seq, frame).
    pub received: Vec<(u32, RawFrame)>,
    /// The attempt number of the last `Resume`.
    pub attempt: u32,
}

/// A resumable session over binary TCP.
pub type SeqClient = SeqSession<Client>;

impl SeqSession<Client> {
    /// Connects to a binary listener and says Hello asking for resume.
    pub fn connect(port: u16) -> SeqClient {
        SeqSession::open(port)
    }

    /// Sends an Ack frame.
    pub fn ack(&mut self) {
        let f = seq_frame(opcode::ACK, 0, 0, self.last_recv, &[]);
        let _ = self.c.write_frame(&f);
    }
}

impl<L: Link> SeqSession<L> {
    /// Connects and says Hello asking for resume.
    pub fn open(port: u16) -> SeqSession<L> {
        let mut c = L::open(port);
        c.send_msg(
            1,
            &pb::Hello {
                client_version: lattice_proto::version::PROTOCOL.to_string(),
                resume: true,
            },
        );
        let f = c.recv_frame();
        assert_eq!(f.flags & FLAG_SEQ, 0, "Welcome goes out plain");
        let AnyMessage::Welcome(w) = f.decode() else {
            panic!("expected Welcome, got {f:?}");
        };
        assert_eq!(w.resume_token.len(), 16, "resume granted");
        c.welcomed(w.session_id);
        SeqSession {
            port,
            c,
            session_id: w.session_id,
            token: w.resume_token,
            last_recv: 0,
            last_sent: 0,
            unacked: Vec::new(),
            received: Vec::new(),
            attempt: 0,
        }
    }

    /// Sends a request (sequenced, acknowledging what was received) and keeps it for resending.
    /// Returns the frame as sent.
    pub fn send<T: LatticeMessage>(&mut self, rid: u32, msg: &T) -> Vec<u8> {
        self.last_sent += 1;
        let f = seq_frame(
            T::OPCODE,
            rid,
            self.last_sent,
            self.last_recv,
            &msg.encode_to_vec(),
        );
        self.unacked.push((self.last_sent, f.clone()));
        // A cut socket is the test's business: the frame stays for the resend.
        let _ = self.c.write_frame(&f);
        f
    }

    /// Sends `frame` as it is (a deliberate resend).
    pub fn send_raw(&mut self, frame: &[u8]) {
        self.c.write_frame(frame).expect("send");
    }

    /// The next application frame (acks applied, Ack frames skipped); `None` when the socket
    /// closed. Every sequenced frame must be the next in order.
    pub fn recv(&mut self) -> Option<RawFrame> {
        loop {
            let f = self.c.try_recv_frame()?;
            assert_ne!(
                f.flags & FLAG_SEQ,
                0,
                "every frame after Welcome carries SEQ: {f:?}"
            );
            self.unacked.retain(|(s, _)| *s > f.ack);
            if f.opcode == opcode::ACK {
                assert_eq!(f.seq, 0);
                continue;
            }
            assert_eq!(
                f.seq,
                self.last_recv.wrapping_add(1),
                "in order, no gap, no duplicate"
            );
            self.last_recv = f.seq;
            self.received.push((f.seq, f.clone()));
            return Some(f);
        }
    }

    /// The texts of the `Said` frames received so far, in order.
    pub fn said_texts(&self) -> Vec<String> {
        self.received
            .iter()
            .filter(|(_, f)| f.opcode == opcode::SAID)
            .map(|(_, f)| f.said_text())
            .collect()
    }

    /// Cuts the socket as a network failure would (both directions, no goodbye).
    pub fn cut(&mut self) {
        self.c.cut();
    }

    /// Opens a new connection and resumes: `Resume` plain, then `Resumed` (plain) or an error. On
    /// success the unacknowledged frames after what the server received are resent.
    pub fn resume(&mut self) -> Resumption {
        self.resume_with(self.token.clone())
    }

    pub fn resume_with(&mut self, token: Vec<u8>) -> Resumption {
        let old = std::mem::replace(&mut self.c, L::open(self.port));
        drop(old);
        self.attempt += 1;
        let r = pb::Resume {
            session_id: self.session_id,
            token,
            last_received_seq: self.last_recv,
            attempt: self.attempt,
        };
        self.c.send_msg(7, &r);
        let f = self.c.recv_frame();
        assert_eq!(f.flags & FLAG_SEQ, 0, "the answer to Resume goes out plain");
        match f.decode() {
            AnyMessage::Resumed(r) => {
                self.token = r.resume_token.clone();
                self.unacked.retain(|(s, _)| *s > r.last_received_seq);
                if r.resync {
                    self.last_recv = r.server_seq;
                }
                let resend: Vec<Vec<u8>> = self.unacked.iter().map(|(_, f)| f.clone()).collect();
                for f in resend {
                    let _ = self.c.write_frame(&f);
                }
                Resumption::Resumed(r)
            }
            AnyMessage::Error(e) => {
                assert_eq!(e.code, error_code::RESUME_REJECTED, "{e:?}");
                assert_eq!(e.opcode, u32::from(opcode::RESUME));
                Resumption::Rejected(e)
            }
            other => panic!("unexpected answer to Resume: {other:?}"),
        }
    }

    pub fn resumed(&mut self) -> pb::Resumed {
        match self.resume() {
            Resumption::Resumed(r) => r,
            Resumption::Rejected(e) => panic!("resume rejected: {e:?}"),
        }
    }
}

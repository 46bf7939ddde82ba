//! A resumable client over WebSocket, written from docs/PROTOCOL.md ("Resume", "WebSocket"): the
//! same sequencing as [`super::seq::SeqClient`], one frame per binary message, and `Resume` as
//! the first message of a new WebSocket connection (its own upgrade).

use std::net::Shutdown;

use lattice_proto::{error_code, opcode, pb, AnyMessage, LatticeMessage};

use super::seq::{seq_frame, Resumption};
use super::{take_frame, RawFrame, WsClient, WsMsg};

const FLAG_SEQ: u16 = 0x0002;

pub struct WsSeqClient {
    /// The HTTP listener's port.
    pub port: u16,
    pub c: WsClient,
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

/// One Lattice frame out of a binary message.
fn frame_of(b: Vec<u8>) -> RawFrame {
    let len = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
    assert_eq!(len, b.len(), "one frame per binary message");
    let mut buf = b;
    take_frame(&mut buf).expect("a whole frame")
}

impl WsSeqClient {
    /// Opens `/ws` on `port` and says Hello asking for resume.
    pub fn connect(port: u16) -> WsSeqClient {
        let mut c = WsClient::open(port, "/ws", "").expect("upgrade");
        c.send(
            1,
            &pb::Hello {
                client_version: lattice_proto::version::PROTOCOL.to_string(),
                resume: true,
            },
        );
        let f = c.recv();
        assert_eq!(f.flags & FLAG_SEQ, 0, "Welcome goes out plain");
        let AnyMessage::Welcome(w) = f.decode() else {
            panic!("expected Welcome, got {f:?}");
        };
        assert_eq!(w.resume_token.len(), 16, "resume granted over WebSocket");
        c.session_id = w.session_id;
        WsSeqClient {
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
        let _ = self.c.try_send_frame(2, &f);
        f
    }

    /// Sends `frame` as it is, in one binary message (a deliberate resend).
    pub fn send_raw(&mut self, frame: &[u8]) {
        self.c.try_send_frame(2, frame).expect("send");
    }

    /// The next application frame (acks applied, Ack frames skipped); `None` when the socket
    /// closed. Every sequenced frame must be the next in order.
    pub fn recv(&mut self) -> Option<RawFrame> {
        loop {
            let f = match self.c.next()? {
                WsMsg::Binary(b) => frame_of(b),
                WsMsg::Close(..) => return None,
                WsMsg::Text(t) => panic!("a text message: {t}"),
            };
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

    /// Cuts the TCP connection under the WebSocket as a network failure would (no close frame).
    pub fn cut(&mut self) {
        let _ = self.c.s.shutdown(Shutdown::Both);
    }

    /// Closes the WebSocket the way a browser's `WebSocket.close()` does: a close frame (1000).
    pub fn close_frame(&mut self) {
        let _ = self.c.try_send_frame(8, &1000u16.to_be_bytes());
    }

    /// Opens a new WebSocket and resumes: `Resume` plain as its first message, then `Resumed`
    /// (plain) or an error. On success the unacknowledged frames after what the server received
    /// are resent.
    pub fn resume(&mut self) -> Resumption {
        let mut c = WsClient::open(self.port, "/ws", "").expect("upgrade");
        std::mem::swap(&mut self.c, &mut c);
        drop(c);
        self.attempt += 1;
        let r = pb::Resume {
            session_id: self.session_id,
            token: self.token.clone(),
            last_received_seq: self.last_recv,
            attempt: self.attempt,
        };
        self.c.send(7, &r);
        let f = self.c.recv();
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
                    let _ = self.c.try_send_frame(2, &f);
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

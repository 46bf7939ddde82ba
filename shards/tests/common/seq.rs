//! A resumable client over TCP, written from docs/PROTOCOL.md ("Resume"): sequence numbers and
//! acknowledgements in the SEQ extension, resends of unacknowledged frames, `Resume` on a new
//! socket.

use std::io::Write;
use std::net::Shutdown;

use lattice_proto::{error_code, opcode, pb, AnyMessage, LatticeMessage};

use super::{Client, RawFrame};

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

pub struct SeqClient {
    pub port: u16,
    pub c: Client,
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

impl SeqClient {
    /// Connects and says Hello asking for resume.
    pub fn connect(port: u16) -> SeqClient {
        let mut c = Client::connect_raw(port);
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
        assert_eq!(w.resume_token.len(), 16, "resume granted");
        SeqClient {
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
    pub fn send<T: LatticeMessage>(&mut self, rid: u32, msg: &T) {
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
        let _ = self.c.s.write_all(&f);
    }

    /// Sends an Ack frame.
    pub fn ack(&mut self) {
        let f = seq_frame(opcode::ACK, 0, 0, self.last_recv, &[]);
        let _ = self.c.s.write_all(&f);
    }

    /// The next application frame (acks applied, Ack frames skipped); `None` when the socket
    /// closed. Every sequenced frame must be the next in order.
    pub fn recv(&mut self) -> Option<RawFrame> {
        loop {
            let f = self.c.try_recv()?;
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

    /// Cuts the socket as a network failure would (both directions, no goodbye).
    pub fn cut(&mut self) {
        let _ = self.c.s.shutdown(Shutdown::Both);
    }

    /// Opens a new socket and resumes: `Resume` plain, then `Resumed` (plain) or an error. On
    /// success the unacknowledged frames after what the server received are resent.
    pub fn resume(&mut self) -> Resumption {
        self.resume_with(self.token.clone())
    }

    pub fn resume_with(&mut self, token: Vec<u8>) -> Resumption {
        let old = std::mem::replace(&mut self.c, Client::connect_raw(self.port));
        drop(old);
        self.attempt += 1;
        let r = pb::Resume {
            session_id: self.session_id,
            token,
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
                    let _ = self.c.s.write_all(&f);
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

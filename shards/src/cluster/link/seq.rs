//! The opening side of a link as a sequenced session client, without I/O: numbering, the
//! acknowledgements, the frames kept for a resend and what a `Resume` answer means
//! (docs/PROTOCOL.md, "Resume"; the accepting side is an ordinary `lattice_wire::Session`).

use std::collections::VecDeque;

use lattice_proto::{pb, LatticeMessage};
use lattice_wire::frame;
use prost::Message as _;

/// `a` after `b` in serial-number arithmetic (RFC 1982, 32 bits).
fn after(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) > 0
}

/// What became of the frames kept for a resend after a `Resume` answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Resumption {
    /// The peer kept the session: resend these frames (already numbered), in order.
    Resend(Vec<Vec<u8>>),
    /// The peer refused or lost the session: these frames (the bodies of what was never
    /// acknowledged, as `(opcode, request_id, frame)`) were not handled; a new session starts.
    Lost(Vec<Vec<u8>>),
}

/// Sequencing state of one link, kept across its sockets.
#[derive(Debug)]
pub struct LinkSeq {
    last_sent: u32,
    last_recv: u32,
    /// Sent and not acknowledged: (seq, the frame as sent).
    unacked: VecDeque<(u32, Vec<u8>)>,
    max_unacked: usize,
    /// The peer's session id and the current resume token, once welcomed.
    session: Option<(u64, Vec<u8>)>,
    attempt: u32,
}

impl LinkSeq {
    /// A link that keeps at most `max_unacked` frames for a resend.
    pub fn new(max_unacked: usize) -> LinkSeq {
        LinkSeq {
            last_sent: 0,
            last_recv: 0,
            unacked: VecDeque::new(),
            max_unacked: max_unacked.max(1),
            session: None,
            attempt: 0,
        }
    }

    /// True while another frame may be sent (the unacknowledged bound is not reached).
    pub fn can_send(&self) -> bool {
        self.unacked.len() < self.max_unacked
    }

    /// Frames sent and not acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// True once a session was granted (a `Resume` is possible).
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// The plain `Hello` asking for resume.
    pub fn hello(&self) -> Vec<u8> {
        let h = pb::Hello {
            client_version: lattice_proto::version::PROTOCOL.to_string(),
            resume: true,
        };
        frame::encode(pb::Hello::OPCODE, 0, 1, &h.encode_to_vec())
    }

    /// The peer's `Welcome`: the session starts (numbering from 1).
    pub fn welcome(&mut self, w: &pb::Welcome) -> Result<(), &'static str> {
        if w.resume_token.is_empty() {
            return Err("the peer granted no resume (its internal listener must offer resume)");
        }
        self.session = Some((w.session_id, w.resume_token.clone()));
        self.last_sent = 0;
        self.last_recv = 0;
        self.attempt = 0;
        Ok(())
    }

    /// Numbers and frames a message, keeps it for a resend and returns the bytes to write.
    pub fn frame(&mut self, opcode: u16, request_id: u32, body: &[u8]) -> Vec<u8> {
        self.last_sent = self.last_sent.wrapping_add(1);
        let mut f = Vec::with_capacity(frame::HEADER_LEN + frame::EXT_LEN + body.len());
        frame::encode_seq_into(
            &mut f,
            opcode,
            0,
            request_id,
            self.last_sent,
            self.last_recv,
            body,
        );
        self.unacked.push_back((self.last_sent, f.clone()));
        f
    }

    /// An `Ack` frame acknowledging what was received.
    pub fn ack_frame(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(frame::HEADER_LEN + frame::EXT_LEN);
        frame::encode_seq_into(
            &mut f,
            lattice_proto::opcode::ACK,
            0,
            0,
            0,
            self.last_recv,
            &[],
        );
        f
    }

    /// A sequenced frame's header arrived: applies its `ack`; returns true when the frame is the
    /// next one (handle it), false for a duplicate or an `Ack` (skip it). A gap is an error (the
    /// peer broke the protocol: drop the socket).
    pub fn received(&mut self, h: &frame::FrameHeader) -> Result<bool, &'static str> {
        if !h.sequenced() {
            return Err("a frame without SEQ on a sequenced link");
        }
        while let Some((s, _)) = self.unacked.front() {
            if after(*s, h.ack) {
                break;
            }
            self.unacked.pop_front();
        }
        if h.opcode == lattice_proto::opcode::ACK {
            return Ok(false);
        }
        if h.seq == self.last_recv.wrapping_add(1) {
            self.last_recv = h.seq;
            return Ok(true);
        }
        if !after(h.seq, self.last_recv) {
            return Ok(false);
        }
        Err("a gap in the peer's sequence")
    }

    /// The plain `Resume` for a new socket. `None` without a session.
    pub fn resume(&mut self) -> Option<Vec<u8>> {
        let (id, token) = self.session.as_ref()?;
        self.attempt += 1;
        let r = pb::Resume {
            session_id: *id,
            token: token.clone(),
            last_received_seq: self.last_recv,
            attempt: self.attempt,
        };
        Some(frame::encode(pb::Resume::OPCODE, 0, 2, &r.encode_to_vec()))
    }

    /// The peer's answer to `Resume`: `Some(resumed)` kept the session, `None` refused it.
    pub fn resumed(&mut self, r: Option<&pb::Resumed>) -> Resumption {
        match r {
            Some(r) => {
                if let Some((_, token)) = self.session.as_mut() {
                    *token = r.resume_token.clone();
                }
                if r.resync {
                    // Frames of the peer were evicted: continue after them (a link's frames are
                    // replies and pushes; the gate's users resynchronise like any client would).
                    self.last_recv = r.server_seq;
                }
                while let Some((s, _)) = self.unacked.front() {
                    if after(*s, r.last_received_seq) {
                        break;
                    }
                    self.unacked.pop_front();
                }
                Resumption::Resend(self.unacked.iter().map(|(_, f)| f.clone()).collect())
            }
            None => Resumption::Lost(self.forget()),
        }
    }

    /// Ends the session (the peer lost it, or the link was given up): returns the frames never
    /// acknowledged; the next socket starts with `Hello`.
    pub fn forget(&mut self) -> Vec<Vec<u8>> {
        self.session = None;
        self.last_sent = 0;
        self.last_recv = 0;
        self.unacked.drain(..).map(|(_, f)| f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(seq: u32, ack: u32, opcode: u16) -> frame::FrameHeader {
        frame::FrameHeader {
            length: 20,
            opcode,
            flags: frame::FLAG_SEQ,
            request_id: 0,
            seq,
            ack,
        }
    }

    #[test]
    fn numbering_acks_and_resend_after_resume() {
        let mut s = LinkSeq::new(3);
        s.welcome(&pb::Welcome {
            server_version: String::new(),
            session_id: 7,
            resume_token: vec![1; 16],
        })
        .unwrap();
        for i in 0..3 {
            s.frame(1003, i, b"x");
        }
        assert!(!s.can_send(), "bound of unacknowledged frames reached");
        // The peer acknowledges 1 on its first frame.
        assert_eq!(s.received(&hdr(1, 1, 1004)), Ok(true));
        assert_eq!(s.unacked(), 2);
        assert!(s.can_send());
        // A duplicate is skipped, an Ack is not handled, a gap is an error.
        assert_eq!(s.received(&hdr(1, 1, 1004)), Ok(false));
        assert_eq!(
            s.received(&hdr(0, 1, lattice_proto::opcode::ACK)),
            Ok(false)
        );
        assert!(s.received(&hdr(5, 1, 1004)).is_err());
        let plain = frame::FrameHeader::new(12, 1004, 0, 0);
        assert!(s.received(&plain).is_err());
        // Resume: the peer says it got 2; only 3 is resent.
        let r = s.resume().unwrap();
        assert_eq!(u16::from_le_bytes([r[4], r[5]]), pb::Resume::OPCODE);
        let again = s.resumed(Some(&pb::Resumed {
            resume_token: vec![2; 16],
            last_received_seq: 2,
            server_seq: 1,
            resync: false,
        }));
        let Resumption::Resend(f) = again else {
            panic!("{again:?}")
        };
        assert_eq!(f.len(), 1);
        assert_eq!(
            u32::from_le_bytes([f[0][12], f[0][13], f[0][14], f[0][15]]),
            3
        );
        // Refused: what was never acknowledged comes back, numbering restarts.
        let lost = s.resumed(None);
        assert!(matches!(lost, Resumption::Lost(ref v) if v.len() == 1));
        assert!(!s.has_session());
        assert!(s.resume().is_none());
    }

    #[test]
    fn serial_numbers_wrap() {
        assert!(after(0, u32::MAX));
        assert!(!after(u32::MAX, 0));
        assert!(!after(5, 5));
    }
}

//! Fuzzes the session state machine (`lattice_wire::Session`) the way a connection task drives
//! it, with arbitrary limits, input split into arbitrary chunks, arbitrary times, and `send` /
//! `transmit` / `transmitted` / `handle_timeout` / `close` / `peer_closed` interleaved.
//!
//! Besides "no panic", every step is checked against a plain model of what the session documents:
//! - input (read with `receive` or with `receive_event`, chosen per read): the frames received,
//!   in order, are exactly those a one-shot decode of the same bytes gives (up to the first
//!   framing error, or the first frame with the SEQ extension, which a session without resume
//!   refuses; either closes the session with `Protocol`); once closing,
//!   input is ignored; an incomplete frame held is shorter than `max(max_frame, 20)`;
//! - output: `transmit` is exactly the accepted bytes not yet written, in order; a frame is always
//!   accepted into an empty queue, otherwise refused with `Overflow` (and the session closing)
//!   when the queue would pass `send_buffer_limit`; so the queue never holds more than
//!   `max(send_buffer_limit, the frame that went into the empty queue)`;
//! - time: `poll_timeout` is `last_seen + idle_timeout` until closing, and `handle_timeout(now)`
//!   closes with `IdleTimeout` exactly when `now` reaches that deadline;
//! - close: the first reason wins.
#![no_main]

use std::time::Duration;

use lattice_wire::frame::{encode_into, FrameHeader, HEADER_LEN};
use lattice_wire::{
    CloseReason, Decoder, Input, MonoTime, SendError, Session, SessionId, SessionLimits, SocketEnd,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Running out of input just ends the run; every check is inside.
    let _ = run(&mut Unstructured::new(data));
});

/// Mostly small steps forward, as a monotonic clock moves; sometimes any value at all (the state
/// machine must not assume its caller's clock, and saturating arithmetic gets exercised).
fn next_time(u: &mut Unstructured<'_>, now: MonoTime) -> Result<MonoTime> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => MonoTime(u.arbitrary()?),
        _ => MonoTime(now.0.saturating_add(u.int_in_range(0..=300u64)?)),
    })
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    // Small limits, so frames, overflows and timeouts are all within reach.
    let limits = SessionLimits::basic(
        u.int_in_range(0..=300u32)?,
        u.int_in_range(0..=600usize)?,
        if u.arbitrary()? {
            Some(Duration::from_nanos(u.int_in_range(0..=1000u64)?))
        } else {
            None
        },
    );
    let max_frame = limits.max_frame as usize;
    let mut now = MonoTime(u.int_in_range(0..=1000u64)?);
    let mut s = Session::new(SessionId::new(0, 1, 0), limits, now);
    // A session that never enables resume keeps its first binding for life.
    let b = s.binding();

    // The model.
    let mut last_seen = now;
    let mut stream = Vec::new(); // every byte the session consumed
    let mut frames: Vec<(FrameHeader, Vec<u8>)> = Vec::new();
    let mut framing_error = false;
    let mut out: Vec<u8> = Vec::new(); // accepted, not yet written
    let mut alone = 0usize; // length of the frame accepted into the empty queue, while queued

    while !u.is_empty() {
        let was_closing = s.is_closing();
        let first_reason = s.close_reason().cloned();
        match u.int_in_range(0..=6u8)? {
            // Bytes from the peer (one socket read).
            0 => {
                now = next_time(u, now)?;
                let len = u.int_in_range(0..=2 * max_frame + 16)?;
                let bytes = u.bytes(len.min(u.len()))?;
                // Either read path: `receive`, or `receive_event` (the runtime's, with its own
                // shortcut for binary sessions); the model is the same.
                let via_event: bool = u.arbitrary()?;
                let mut input = bytes;
                let mut copy = bytes.to_vec();
                let mut input_mut = &mut copy[..];
                loop {
                    let next = if via_event {
                        s.receive_event(b, now, &mut input_mut)
                    } else {
                        s.receive(b, now, &mut input)
                    };
                    let left = if via_event {
                        input_mut.len()
                    } else {
                        input.len()
                    };
                    match next {
                        Ok(Some(Input::Frame(f))) => {
                            assert!(!was_closing, "a frame after closing");
                            let f = f.frame();
                            frames.push((f.header, f.body.to_vec()));
                        }
                        Ok(Some(other)) => panic!("no resume, no rate limit: {other:?}"),
                        Ok(None) => {
                            assert_eq!(left, 0, "Ok(None) left input unread");
                            break;
                        }
                        Err(reason) => {
                            assert!(!was_closing, "an error after closing");
                            assert!(matches!(reason, CloseReason::Protocol(_)), "{reason:?}");
                            assert_eq!(s.close_reason(), Some(&reason));
                            framing_error = true;
                            break;
                        }
                    }
                }
                if !was_closing {
                    // All of it: on a framing error the bad header may be left in `input`, and
                    // the one-shot decode must meet it too; nothing after it matters.
                    stream.extend_from_slice(bytes);
                    if !bytes.is_empty() {
                        last_seen = now;
                    }
                }
            }
            // The application queues a frame: raw bytes, or one encoded in place.
            1 => {
                let len = u.int_in_range(0..=max_frame + limits.send_buffer_limit)?;
                let body = u.bytes(len.min(u.len()))?;
                let before = out.len();
                let (r, frame) = if u.arbitrary()? {
                    (s.send(body), body.to_vec())
                } else {
                    let mut frame = Vec::new();
                    encode_into(&mut frame, 4, 0, 7, body);
                    let r = s.send_with(frame.len(), |o| encode_into(o, 4, 0, 7, body));
                    (r, frame)
                };
                let expected = if was_closing {
                    Err(SendError::Closing)
                } else if before > 0 && before + frame.len() > limits.send_buffer_limit {
                    Err(SendError::Overflow)
                } else {
                    Ok(())
                };
                let r = r.map(|sent| assert_eq!(sent.evicted, 0, "no replay without resume"));
                assert_eq!(r, expected);
                match r {
                    Ok(()) => {
                        if before == 0 {
                            alone = frame.len();
                        }
                        out.extend_from_slice(&frame);
                    }
                    Err(SendError::Overflow) => {
                        assert_eq!(s.close_reason(), Some(&CloseReason::SendBufferOverflow));
                    }
                    Err(SendError::Closing) => {}
                    Err(SendError::NoChannel) => panic!("a binary session carries every frame"),
                }
            }
            // The socket takes part of what is queued.
            2 => {
                assert_eq!(s.transmit(b), &out[..]);
                let n = u.int_in_range(0..=out.len())?;
                s.transmitted(b, n);
                out.drain(..n);
            }
            // The runtime's timer fires.
            3 => {
                let deadline = s.poll_timeout();
                let expected_deadline = match (was_closing, limits.idle_timeout) {
                    (false, Some(t)) => Some(last_seen.saturating_add(t)),
                    _ => None,
                };
                assert_eq!(deadline, expected_deadline);
                now = next_time(u, now)?;
                s.handle_timeout(now);
                if let Some(d) = deadline {
                    // The deadline `poll_timeout` gave is the one `handle_timeout` acts on.
                    assert_eq!(s.is_closing(), now >= d, "deadline {d:?}, now {now:?}");
                }
                if !was_closing && s.is_closing() {
                    assert_eq!(s.close_reason(), Some(&CloseReason::IdleTimeout));
                }
            }
            // The runtime closes the session.
            4 => {
                let reason = match u.int_in_range(0..=3u8)? {
                    0 => CloseReason::Shutdown,
                    1 => CloseReason::App("kicked".into()),
                    2 => CloseReason::Io("reset".into()),
                    _ => CloseReason::IdleTimeout,
                };
                s.close(reason.clone());
                assert_eq!(
                    s.close_reason(),
                    Some(first_reason.as_ref().unwrap_or(&reason))
                );
            }
            // The peer closed its side.
            5 => {
                let held = s.buffered_input();
                let SocketEnd::Closed(reason) = s.peer_closed(b, now) else {
                    panic!("a session without resume closes when its socket ends");
                };
                assert_eq!(s.close_reason(), Some(&reason));
                match &first_reason {
                    Some(first) => assert_eq!(&reason, first, "the first reason wins"),
                    None if held == 0 => assert_eq!(reason, CloseReason::PeerClosed),
                    None => assert!(
                        matches!(&reason, CloseReason::Protocol(m) if m.contains("truncated")),
                        "{reason:?}"
                    ),
                }
            }
            // The gate accepts the Hello.
            _ => {
                s.hello_accepted(now);
                // The idle deadline counts from the Hello (time only moves forward here).
                last_seen = last_seen.max(now);
                assert!(s.is_ready());
            }
        }

        // Invariants after every step.
        if first_reason.is_some() {
            assert_eq!(
                s.close_reason(),
                first_reason.as_ref(),
                "the first reason wins"
            );
        }
        assert_eq!(s.last_seen(), last_seen);
        assert_eq!(s.unsent(), out.len());
        assert_eq!(s.transmit(b), &out[..]);
        if out.is_empty() {
            alone = 0;
        }
        assert!(
            s.unsent() <= limits.send_buffer_limit.max(alone),
            "queued {} > max(limit {}, lone frame {alone})",
            s.unsent(),
            limits.send_buffer_limit
        );
        assert!(
            s.buffered_input() < max_frame.max(HEADER_LEN + 8),
            "holding {} bytes of input (max_frame {max_frame})",
            s.buffered_input()
        );
        if s.is_closing() {
            assert_eq!(s.poll_timeout(), None);
        }
    }

    // The frames received in pieces are the frames of a one-shot decode of the same bytes, up to
    // the first one with the SEQ extension (a protocol error on a session without resume).
    let mut whole = Vec::new();
    let mut seq_frame = false;
    let res = Decoder::new(limits.max_frame).feed(&stream, |f| {
        if f.header.sequenced() {
            seq_frame = true;
            return false;
        }
        whole.push((f.header, f.body.to_vec()));
        true
    });
    assert_eq!(frames, whole);
    assert_eq!(res.is_err() || seq_frame, framing_error);
    Ok(())
}

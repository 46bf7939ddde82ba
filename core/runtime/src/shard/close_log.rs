//! How a session's close is logged: ordinary ends (the client left, reset, timed out) at info,
//! violations at warn, rate-limited per reason by the shard's
//! [`WarnLimiter`](crate::telemetry::warn_limit::WarnLimiter).
//!
//! Every layer of the stack (binary frames, HTTP/1.1, WebSocket, TLS) reports its failures as
//! [`CloseReason::Protocol`] with a message that starts with the layer's name (`http: …`,
//! `websocket: …`, `tls: …`). The limiter's reasons are finer than the close-reason metric
//! label, so a storm of TLS scanners does not hide a burst of malformed frames: one key per layer
//! and kind. Timeouts and a peer that vanishes mid-handshake are ordinary, as a TCP reset is.

use lattice_wire::CloseReason;

/// How one close is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseLog {
    /// Nothing was lost (a socket handed over to a resumed session): debug.
    Quiet,
    /// Ordinary for a game server: logged at info, never rate-limited.
    Ordinary,
    /// A violation or an overflow: logged at warn, rate-limited under this reason.
    Violation(&'static str),
}

/// Classifies `reason`. Cost: a few prefix comparisons on the reason's text.
pub(crate) fn classify(reason: &CloseReason) -> CloseLog {
    match reason {
        // Clients leave, reset, lose their network or go idle.
        CloseReason::PeerClosed
        | CloseReason::Shutdown
        | CloseReason::IdleTimeout
        | CloseReason::Io(_)
        // A resume window that ran out is a client that went away; an operator's close was asked.
        | CloseReason::ResumeExpired(_)
        | CloseReason::Admin(_) => CloseLog::Ordinary,
        CloseReason::HandedOver => CloseLog::Quiet,
        CloseReason::RateLimited => CloseLog::Violation("rate_limited"),
        CloseReason::SendBufferOverflow => CloseLog::Violation("send_buffer_overflow"),
        CloseReason::App(_) => CloseLog::Violation("app"),
        CloseReason::Protocol(m) => protocol(m),
    }
}

fn protocol(m: &str) -> CloseLog {
    if let Some(rest) = m.strip_prefix("tls: ") {
        // A client that is too slow to finish, or goes away during, the handshake is a timeout
        // or a reset seen through TLS.
        if rest.starts_with("handshake not complete after")
            || rest == "peer closed during the handshake"
        {
            return CloseLog::Ordinary;
        }
        return CloseLog::Violation(if rest.starts_with("truncated record") {
            "tls_truncated"
        } else {
            "tls_error"
        });
    }
    if let Some(rest) = m.strip_prefix("http: ") {
        // The head deadline (answered 408): a slow or idle client.
        if rest.starts_with("request head not complete within") {
            return CloseLog::Ordinary;
        }
        return CloseLog::Violation("http_error");
    }
    if m.starts_with("websocket: ") {
        return CloseLog::Violation("websocket_error");
    }
    if m.starts_with("websocket handshake refused") {
        return CloseLog::Violation("websocket_handshake_refused");
    }
    if m.starts_with("websocket closed by the peer") {
        return CloseLog::Violation("websocket_peer_close_code");
    }
    // The binary stack's frame errors (and a frame cut short at close).
    CloseLog::Violation("protocol_error")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(m: &str) -> CloseLog {
        classify(&CloseReason::Protocol(m.into()))
    }

    #[test]
    fn ordinary_ends_are_not_violations() {
        for r in [
            CloseReason::PeerClosed,
            CloseReason::Shutdown,
            CloseReason::IdleTimeout,
            CloseReason::Io("connection reset by peer".into()),
        ] {
            assert_eq!(classify(&r), CloseLog::Ordinary, "{r}");
        }
        assert_eq!(
            classify(&CloseReason::ResumeExpired("peer closed".into())),
            CloseLog::Ordinary
        );
        assert_eq!(
            classify(&CloseReason::Admin("ip rule".into())),
            CloseLog::Ordinary
        );
        assert_eq!(classify(&CloseReason::HandedOver), CloseLog::Quiet);
        assert_eq!(
            classify(&CloseReason::RateLimited),
            CloseLog::Violation("rate_limited")
        );
        assert_eq!(
            p("tls: handshake not complete after 10000 ms"),
            CloseLog::Ordinary
        );
        assert_eq!(
            p("tls: peer closed during the handshake"),
            CloseLog::Ordinary
        );
        assert_eq!(
            p("http: request head not complete within 10s"),
            CloseLog::Ordinary
        );
    }

    #[test]
    fn each_layer_has_its_own_reason() {
        let cases = [
            ("frame length 99999999 out of range", "protocol_error"),
            ("truncated frame at close", "protocol_error"),
            ("http: malformed request: request line", "http_error"),
            ("http: request head larger than 8192 bytes", "http_error"),
            (
                "websocket: text messages are not accepted",
                "websocket_error",
            ),
            (
                "websocket handshake refused (403)",
                "websocket_handshake_refused",
            ),
            (
                "websocket closed by the peer with code 1002",
                "websocket_peer_close_code",
            ),
            (
                "tls: received corrupt message of type InvalidContentType",
                "tls_error",
            ),
            (
                "tls: truncated record at close (3 of 20 bytes)",
                "tls_truncated",
            ),
        ];
        for (m, key) in cases {
            assert_eq!(p(m), CloseLog::Violation(key), "{m}");
        }
        assert_eq!(
            classify(&CloseReason::SendBufferOverflow),
            CloseLog::Violation("send_buffer_overflow")
        );
        assert_eq!(
            classify(&CloseReason::App("internal error".into())),
            CloseLog::Violation("app")
        );
    }
}

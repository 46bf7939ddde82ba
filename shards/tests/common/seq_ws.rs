//! The resumable client of [`super::seq`] over WebSocket (docs/PROTOCOL.md "Resume",
//! "WebSocket"): one frame per binary message, and `Resume` as the first message of a new
//! WebSocket connection (its own upgrade).

use super::seq::SeqSession;
use super::WsClient;

/// A resumable session over WebSocket (`/ws` of an HTTP listener).
pub type WsSeqClient = SeqSession<WsClient>;

impl SeqSession<WsClient> {
    /// Opens `/ws` on the HTTP listener's `port` and says Hello asking for resume.
    pub fn connect(port: u16) -> WsSeqClient {
        SeqSession::open(port)
    }

    /// Closes the WebSocket the way a browser's `WebSocket.close()` does: a close frame (1000).
    pub fn close_frame(&mut self) {
        let _ = self.c.try_send_frame(8, &1000u16.to_be_bytes());
    }
}

//! Per-shard counters of the gateway transports (HTTP requests, WebSocket upgrades, frames a
//! transport could not carry). Listener counters (accepts, accept failures) are per listener:
//! `net::listener`.

crate::shard_counters! {
    /// Gateway counters of one shard.
    pub struct GatewayMetrics("lattice") {
        http_requests_total: Counter, "HTTP requests handed to the application (GET /, /healthz, POST /rpc/...).";
        http_bad_requests_total: Counter, "HTTP connections closed for a bad request (malformed head, limits, Transfer-Encoding, head timeout); each was answered with its status.";
        ws_upgrades_total: Counter, "HTTP connections upgraded to WebSocket.";
        frames_no_channel_total: Counter, "Frames dropped because the session's transport cannot carry them (an HTTP connection not waiting for that reply).";
    }
}

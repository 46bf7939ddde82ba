//! The routes of the shards' HTTP listeners (stack `http`): what an HTTP request that is not a
//! WebSocket upgrade gets. The upgrade itself (`GET /ws`), the request parsing, limits and bad
//! input statuses are the session's (`lattice_wire::http`, `lattice_wire::stack`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` |
//! | `GET /` | the demo page ([`demo`]) |
//! | `GET /lattice.js` | the generated TypeScript client, bundled ([`demo`]) |
//! | `POST /rpc/{MessageName}` | the message handled like a frame, the reply as the body ([`rpc`]) |
//! | `GET /icons/{id}` | an icon's PNG with an `ETag`; `304` on a matching `If-None-Match` ([`icons`]) |
//!
//! A known path with another method gets `405` (with `Allow`), any other path `404`.

pub mod demo;
pub mod icons;
pub mod rpc;

use lattice_runtime::ShardCx;
use lattice_wire::http::{Request, Response};
use lattice_wire::{RpcReply, SessionId};

use crate::host::ServiceHost;
use crate::service::{Encoder, ShardMsg};

/// The HTTP routes of one shard.
pub struct HttpRoutes {
    rpc: rpc::Rpc,
    /// The demo page, naming `http.ws_path`.
    page: String,
}

/// True for a path the HTTP listener serves itself (a WebSocket path there would hide it).
pub fn is_route(path: &str) -> bool {
    matches!(path, "/" | "/healthz" | "/lattice.js")
        || path.starts_with("/rpc/")
        || path.starts_with("/icons/")
}

impl HttpRoutes {
    /// Routes whose RPCs wait `rpc_timeout` for a reply, with a demo page that connects to
    /// `ws_path`.
    pub fn new(rpc_timeout: std::time::Duration, ws_path: &str) -> HttpRoutes {
        HttpRoutes {
            rpc: rpc::Rpc::new(rpc_timeout),
            page: demo::page_for(ws_path),
        }
    }

    /// Answers `req` from `session` (now, or for an RPC when the reply arrives).
    pub fn request(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        host: &mut ServiceHost,
        session: SessionId,
        req: Request,
    ) {
        let resp = match (req.method.as_str(), req.path.as_str()) {
            // HEAD is answered as GET, without the body (the connection leaves it out).
            ("GET" | "HEAD", "/healthz") => Response::text(200, "ok\n"),
            ("GET" | "HEAD", "/") => demo::page(&self.page),
            ("GET" | "HEAD", "/lattice.js") => demo::script(),
            ("GET" | "HEAD", p) if p.starts_with("/icons/") => {
                icons::get(&req, &p["/icons/".len()..])
            }
            ("POST", p) if p.starts_with("/rpc/") => {
                match self.rpc.start(cx, host, session, &req) {
                    Ok(()) => return,
                    Err(resp) => resp,
                }
            }
            (_, "/healthz" | "/" | "/lattice.js") => {
                Response::text(405, "method not allowed\n").with_header("Allow", "GET, HEAD")
            }
            (_, p) if p.starts_with("/icons/") => {
                Response::text(405, "method not allowed\n").with_header("Allow", "GET, HEAD")
            }
            (_, p) if p.starts_with("/rpc/") => {
                Response::text(405, "method not allowed\n").with_header("Allow", "POST")
            }
            _ => Response::text(404, "not found\n"),
        };
        cx.respond(session, &resp);
    }

    /// The reply frame of an RPC arrived: answer its request.
    pub fn reply(
        &mut self,
        cx: &ShardCx<ShardMsg>,
        enc: &mut Encoder,
        session: SessionId,
        reply: RpcReply,
    ) {
        let resp = self.rpc.finish(enc, &reply);
        cx.respond(session, &resp);
    }
}

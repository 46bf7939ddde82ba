//! `GET /admin/sessions`: counts per shard and a filtered list.
//!
//! Query: `shard=N` (one shard; default all), `peer=CIDR` (percent-encoded `/`), `state=detached`
//! or `state=attached`, `limit=N` (sessions listed per shard, default 100, at most 10,000; the
//! counts always cover every session).

use std::sync::Arc;

use lattice_runtime::control::{Control, SessionInfo, SessionQuery};
use lattice_runtime::net::access::Cidr;
use lattice_runtime::telemetry::admin::{Request, Response, Routes};
use serde_json::{json, Value};

use super::json::{error, ok, shard_error, unescape};
use super::Api;

/// Sessions listed per shard when the query names no limit.
const DEFAULT_LIMIT: usize = 100;
/// Most sessions listed per shard.
const MAX_LIMIT: usize = 10_000;

pub(super) fn register(r: &mut Routes, api: &Arc<Api>) {
    let api = api.clone();
    r.add(
        "GET",
        "/admin/sessions",
        Box::new(move |req| list(&api, req)),
    );
}

/// The shards a request names (`shard=N`), or all of them.
pub(super) fn shards_of(api: &Api, req: &Request) -> Result<Vec<usize>, Response> {
    match req.query_param("shard") {
        None => Ok((0..api.control.shards()).collect()),
        Some(s) => match lattice_wire::http::parse_digits::<usize>(s) {
            Some(n) if n < api.control.shards() => Ok(vec![n]),
            _ => Err(error(
                400,
                format!(
                    "shard must be 0..={} (got {s:?})",
                    api.control.shards().saturating_sub(1)
                ),
            )),
        },
    }
}

fn list(api: &Api, req: &Request) -> Response {
    // Unknown and repeated parameters are refused before (`QUERY_PARAMS` in `mod.rs`).
    let shards = match shards_of(api, req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let peer = match req
        .query_param("peer")
        .map(|p| unescape(p).map(|p| p.parse::<Cidr>()))
    {
        None => None,
        Some(Some(Ok(c))) => Some(c),
        Some(Some(Err(e))) => return error(400, e),
        Some(None) => return error(400, "peer is not percent-encoded correctly"),
    };
    let detached = match req.query_param("state") {
        None | Some("all") => None,
        Some("detached") => Some(true),
        Some("attached") => Some(false),
        Some(s) => {
            return error(
                400,
                format!("state must be detached, attached or all (got {s:?})"),
            )
        }
    };
    let limit = match req
        .query_param("limit")
        .map(|v| lattice_wire::http::parse_digits::<usize>(v).ok_or(()))
    {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if n <= MAX_LIMIT => n,
        _ => return error(400, format!("limit must be 0..={MAX_LIMIT}")),
    };
    let query = SessionQuery {
        peer,
        detached,
        limit,
    };
    let answers = api
        .control
        .ask(&shards, api.wait, |reply| Control::Sessions {
            query: query.clone(),
            reply,
        });
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let (mut open, mut det, mut matched) = (0, 0, 0);
    for (shard, a) in answers {
        match a {
            Ok(s) => {
                open += s.open;
                det += s.detached;
                matched += s.matched;
                out.push(json!({
                    "shard": s.shard,
                    "open": s.open,
                    "detached": s.detached,
                    "matched": s.matched,
                    "sessions": s.sessions.iter().map(info).collect::<Vec<_>>(),
                }));
            }
            Err(e) => errors.push(shard_error(shard, &e)),
        }
    }
    ok(json!({
        "open": open,
        "detached": det,
        "matched": matched,
        "shards": out,
        "errors": errors,
    }))
}

fn info(s: &SessionInfo) -> Value {
    json!({
        // A string: JavaScript numbers lose ids above 2^53.
        "id": s.id.as_u64().to_string(),
        "name": s.id.to_string(),
        "shard": s.id.shard(),
        "peer": s.peer.to_string(),
        "ready": s.ready,
        "resumable": s.resumable,
        "detached_ms": s.detached.as_ref().map(|d| d.0),
        "detached_reason": s.detached.as_ref().map(|d| d.1.clone()),
        "age_ms": s.age_ms,
        "idle_ms": s.idle_ms,
        "unsent_bytes": s.unsent,
        "replay_frames": s.replay.0,
        "replay_bytes": s.replay.1,
    })
}

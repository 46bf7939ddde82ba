//! `GET /admin/ip-rules` and `PUT /admin/ip-rules`: the IP rules applied at accept, replaced live.
//!
//! `PUT` body: `{"allow": [CIDR…], "deny": [CIDR…], "allow_only": bool, "close_matching": bool}`
//! (missing lists are empty, missing flags false). The new rules apply to the next connection;
//! with `close_matching`, every shard also closes its sessions the new rules refuse, each with the
//! rule logged. A bad block is a 400 naming it, and nothing changes.

use std::sync::Arc;

use lattice_runtime::control::{CloseSelector, Control};
use lattice_runtime::net::access::{AccessConfig, AccessRules};
use lattice_runtime::telemetry::admin::{Request, Response, Routes};
use serde_json::{json, Value};

use super::json::{body_required, error, ok, shard_error};
use super::Api;

pub(super) fn register(r: &mut Routes, api: &Arc<Api>) {
    let get = api.clone();
    r.add(
        "GET",
        "/admin/ip-rules",
        Box::new(move |_| ok(rules_json(&get.control.access().config()))),
    );
    let put = api.clone();
    r.add(
        "PUT",
        "/admin/ip-rules",
        Box::new(move |req| replace(&put, req)),
    );
}

pub(super) fn rules_json(c: &AccessConfig) -> Value {
    json!({ "allow": c.allow, "deny": c.deny, "allow_only": c.allow_only })
}

fn strings(v: Option<&Value>, key: &str) -> Result<Vec<String>, Response> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| error(400, format!("{key} must be a list of strings"))),
        Some(_) => Err(error(400, format!("{key} must be a list of strings"))),
    }
}

fn flag(v: Option<&Value>, key: &str) -> Result<bool, Response> {
    match v {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(error(400, format!("{key} must be true or false"))),
    }
}

fn replace(api: &Api, req: &Request) -> Response {
    let b = match body_required(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed = (|| {
        if let Some(k) = b.as_object().and_then(|o| {
            o.keys()
                .find(|k| !["allow", "deny", "allow_only", "close_matching"].contains(&k.as_str()))
        }) {
            return Err(error(400, format!("unknown field {k:?}")));
        }
        let cfg = AccessConfig {
            allow: strings(b.get("allow"), "allow")?,
            deny: strings(b.get("deny"), "deny")?,
            allow_only: flag(b.get("allow_only"), "allow_only")?,
        };
        Ok((cfg, flag(b.get("close_matching"), "close_matching")?))
    })();
    let (cfg, close_matching) = match parsed {
        Ok(x) => x,
        Err(r) => return r,
    };
    match apply(api, &cfg, close_matching) {
        Ok(v) => ok(v),
        Err(r) => r,
    }
}

/// Blocks of each list named in the log line of a change (the counts are always there; the whole
/// rules are one `GET /admin/ip-rules` away).
const LOGGED_BLOCKS: usize = 8;

/// The first [`LOGGED_BLOCKS`] of `blocks`, then how many more: one log line stays short
/// whatever the list (20,000 blocks made one line of about 470 KB).
/// Also the form of `POST /admin/close`'s session ids and blocks.
pub(super) fn logged_blocks<T: std::fmt::Display>(blocks: &[T]) -> String {
    let first: Vec<String> = blocks[..blocks.len().min(LOGGED_BLOCKS)]
        .iter()
        .map(T::to_string)
        .collect();
    let mut s = format!("[{}", first.join(", "));
    if blocks.len() > LOGGED_BLOCKS {
        s.push_str(&format!(", … {} more", blocks.len() - LOGGED_BLOCKS));
    }
    s.push(']');
    s
}

/// Publishes `cfg` to the acceptor and, with `close_matching`, closes what it refuses. Shared with
/// `POST /admin/reload`.
pub(super) fn apply(
    api: &Api,
    cfg: &AccessConfig,
    close_matching: bool,
) -> Result<Value, Response> {
    let rules = AccessRules::new(cfg).map_err(|e| error(400, e))?;
    let shown = rules.config();
    let rules = Arc::new(rules);
    api.control.set_access((*rules).clone());
    tracing::info!(
        allow_count = shown.allow.len(),
        allow = %logged_blocks(&shown.allow),
        deny_count = shown.deny.len(),
        deny = %logged_blocks(&shown.deny),
        allow_only = shown.allow_only,
        close_matching,
        "admin: IP rules replaced"
    );
    let (mut closed, mut errors) = (0, Vec::new());
    if close_matching {
        let shards: Vec<usize> = (0..api.control.shards()).collect();
        for (shard, a) in api.control.ask(&shards, api.wait, |done| Control::Close {
            which: CloseSelector::RefusedBy(rules.clone()),
            reason: "IP rules changed".into(),
            done: Some(done),
        }) {
            match a {
                Ok(n) => closed += n,
                Err(e) => errors.push(shard_error(shard, &e)),
            }
        }
    }
    Ok(json!({ "rules": rules_json(&shown), "closed": closed, "errors": errors }))
}

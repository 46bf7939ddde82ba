//! `POST /admin/close`: close sessions by shard, by ids, by CIDR, or all, through the control
//! lanes (which work when the data rings are full).
//!
//! Body (exactly one selector): `{"all": true}`, `{"shard": N}`, `{"sessions": ["ID", …]}` (ids as
//! decimal strings or numbers), `{"cidr": ["10.0.0.0/8", …]}`; optional `"reason"` (logged with
//! each close, default "admin request"). Answer: `{"closed": N, "per_shard": […], "errors": […]}`.

use std::sync::Arc;

use lattice_runtime::control::{CloseSelector, Control};
use lattice_runtime::net::access::Cidr;
use lattice_runtime::telemetry::admin::{Request, Response, Routes};
use lattice_wire::SessionId;
use serde_json::{json, Value};

use super::json::{body, error, ok, shard_error};
use super::Api;
use crate::text::invisible;

/// Longest reason accepted (it is logged once per closed session).
const MAX_REASON: usize = 200;

pub(super) fn register(r: &mut Routes, api: &Arc<Api>) {
    let api = api.clone();
    r.add(
        "POST",
        "/admin/close",
        Box::new(move |req| close(&api, req)),
    );
}

/// Characters a logged reason must not hold: control characters, the Unicode line and paragraph
/// separators (they break a log line), and those that hide text ([`invisible`]).
fn non_printing(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || invisible(c)
}

fn close(api: &Api, req: &Request) -> Response {
    let b = match body(req) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(k) = b.as_object().and_then(|o| {
        o.keys()
            .find(|k| !["all", "shard", "sessions", "cidr", "reason"].contains(&k.as_str()))
    }) {
        return error(400, format!("unknown field {k:?}"));
    }
    let reason = match b.get("reason") {
        None => "admin request".to_string(),
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= MAX_REASON && !s.chars().any(non_printing) =>
        {
            s.clone()
        }
        Some(_) => {
            return error(
                400,
                format!(
                    "reason must be a string of 1..={MAX_REASON} bytes without control, line-separator or invisible format characters (it is logged)"
                ),
            )
        }
    };
    let given: Vec<&str> = ["all", "shard", "sessions", "cidr"]
        .into_iter()
        .filter(|k| b.get(k).is_some())
        .collect();
    if given.len() != 1 {
        return error(
            400,
            "give exactly one of \"all\": true, \"shard\": N, \"sessions\": [ids], \"cidr\": [blocks]",
        );
    }
    let n = api.control.shards();
    let (shards, which) =
        match given[0] {
            "all" if b["all"] == json!(true) => ((0..n).collect::<Vec<_>>(), CloseSelector::All),
            "shard" => match b["shard"].as_u64() {
                Some(s) if (s as usize) < n => (vec![s as usize], CloseSelector::All),
                _ => {
                    return error(
                        400,
                        format!("shard must be a number 0..={}", n.saturating_sub(1)),
                    )
                }
            },
            "sessions" => match ids(&b["sessions"]) {
                Some(ids) if !ids.is_empty() => {
                    let mut shards: Vec<usize> =
                        ids.iter().map(|i| i.shard()).filter(|s| *s < n).collect();
                    shards.sort_unstable();
                    shards.dedup();
                    (shards, CloseSelector::Ids(ids))
                }
                _ => return error(
                    400,
                    "sessions must be a non-empty list of session ids (decimal strings or numbers)",
                ),
            },
            "cidr" => {
                let blocks: Option<Result<Vec<Cidr>, _>> = b["cidr"].as_array().map(|a| {
                    a.iter()
                        .map(|v| v.as_str().unwrap_or("").parse::<Cidr>())
                        .collect()
                });
                match blocks {
                    Some(Ok(blocks)) if !blocks.is_empty() => {
                        ((0..n).collect(), CloseSelector::Cidrs(blocks))
                    }
                    Some(Err(e)) => return error(400, e),
                    _ => return error(400, "cidr must be a non-empty list of CIDR blocks"),
                }
            }
            _ => return error(400, "\"all\" must be true"),
        };
    let scope = match given[0] {
        "shard" => format!("shard {}", shards[0]),
        other => other.to_string(),
    };
    // Bounded like the IP-rules line: the first 8 ids or blocks, then how many more.
    let listed = match &which {
        CloseSelector::Ids(ids) => super::ip_rules::logged_blocks(ids),
        CloseSelector::Cidrs(blocks) => super::ip_rules::logged_blocks(blocks),
        _ => String::new(),
    };
    tracing::info!(%scope, %listed, %reason, "admin: close sessions");
    let answers = api.control.ask(&shards, api.wait, |done| Control::Close {
        which: which.clone(),
        reason: reason.clone(),
        done: Some(done),
    });
    let (mut total, mut per_shard, mut errors) = (0, Vec::new(), Vec::new());
    for (shard, a) in answers {
        match a {
            Ok(k) => {
                total += k;
                per_shard.push(json!({ "shard": shard, "closed": k }));
            }
            Err(e) => errors.push(shard_error(shard, &e)),
        }
    }
    ok(json!({ "closed": total, "per_shard": per_shard, "errors": errors }))
}

fn ids(v: &Value) -> Option<Vec<SessionId>> {
    v.as_array()?
        .iter()
        .map(|x| match x {
            Value::String(s) => s.parse::<u64>().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        })
        .map(|id| id.map(SessionId::from_u64))
        .collect()
}

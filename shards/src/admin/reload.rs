//! `POST /admin/reload`: loads the configuration again from where it came from at start (the
//! `--config` file, the `LATTICE_*` environment of the process, the command-line overrides) and
//! applies what can change live:
//!
//! - `[limits]`: the per-session rate limits (existing sessions included, through the control
//!   lanes) and the per-address connection limit (the acceptor's next connection);
//! - `[access]`: the IP rules (next connection; with `?close_matching=1`, the sessions they refuse
//!   are closed too).
//!
//! Every other changed key is listed under `restart_required` and left as it was. A configuration
//! that does not load is a 400 with the loader's one-line error, and nothing changes. Sections
//! whose file text did not change are not reapplied, so rules set with `PUT /admin/ip-rules` stay
//! until the file's `[access]` changes.

use std::sync::Arc;

use lattice_runtime::telemetry::admin::{Request, Response, Routes};
use serde_json::json;

use super::json::{error, ok};
use super::{ip_rules, Api};
use crate::config::Config;

/// Sections applied live.
const LIVE: [&str; 2] = ["limits", "access"];

pub(super) fn register(r: &mut Routes, api: &Arc<Api>) {
    let api = api.clone();
    r.add(
        "POST",
        "/admin/reload",
        Box::new(move |req| reload(&api, req)),
    );
}

/// Every `section.key` whose value differs between two merged tables.
fn changed_keys(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    for (section, v) in new {
        let (Some(nt), ot) = (v.as_table(), old.get(section).and_then(|o| o.as_table())) else {
            continue;
        };
        for (k, nv) in nt {
            if ot.and_then(|t| t.get(k)) != Some(nv) {
                out.push(format!("{section}.{k}"));
            }
        }
    }
    out.sort();
    out
}

fn reload(api: &Api, req: &Request) -> Response {
    let close_matching = match req.query_param("close_matching") {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(v) => {
            return error(
                400,
                format!("close_matching must be 1, true, 0 or false (got {v:?})"),
            )
        }
    };
    let mut current = api.config.lock().unwrap_or_else(|p| p.into_inner());
    let o = current.origin.clone();
    let mut new = match Config::load(o.file.as_deref(), o.env.clone(), o.args.clone()) {
        Ok(c) => c,
        Err(e) => return error(400, format!("configuration not reloaded: {e}")),
    };
    // The running configuration holds the session-token key resolved at start (an empty
    // account.token_secret means the key file): resolve the new one the same way, so an unchanged
    // setting does not read as changed.
    if let Err(e) = crate::logic::account::secret::resolve(&mut new) {
        return error(400, format!("configuration not reloaded: {e}"));
    }
    let changed = changed_keys(&current.table, &new.table);
    let (live, restart): (Vec<&String>, Vec<&String>) = changed
        .iter()
        .partition(|k| LIVE.iter().any(|s| k.starts_with(&format!("{s}."))));
    let mut result = json!({});
    if live.iter().any(|k| k.starts_with("access.")) {
        match ip_rules::apply(api, &new.continuity.access, close_matching) {
            Ok(v) => result["access"] = v,
            Err(r) => return r,
        }
    }
    if live.iter().any(|k| k.starts_with("limits.")) {
        let missed = api.control.set_limits(new.continuity.limits.clone());
        tracing::info!(limits = %serde_json::to_string(&new.continuity.limits).unwrap_or_default(), "admin: rate limits reloaded");
        result["limits_lane_full_shards"] = json!(missed);
    }
    if !restart.is_empty() {
        tracing::warn!(keys = %lattice_runtime::telemetry::log::list(&restart), "admin: reload left keys that need a restart");
    }
    // What is in force now: the live sections of the new load, the rest as at start.
    let mut kept = current.clone();
    kept.continuity.limits = new.continuity.limits.clone();
    kept.continuity.access = new.continuity.access.clone();
    for s in LIVE {
        if let Some(v) = new.table.get(s) {
            kept.table.insert(s.to_string(), v.clone());
        }
    }
    *current = kept;
    result["applied"] = json!(live);
    result["restart_required"] = json!(restart);
    ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_name_section_and_key() {
        let a: toml::Table = "[limits]\nx = 1\ny = 2\n[net]\nz = 3\n".parse().unwrap();
        let b: toml::Table = "[limits]\nx = 1\ny = 5\n[net]\nz = 4\nw = 0\n"
            .parse()
            .unwrap();
        assert_eq!(changed_keys(&a, &b), ["limits.y", "net.w", "net.z"]);
        assert!(changed_keys(&a, &a).is_empty());
    }
}

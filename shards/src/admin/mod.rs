//! The admin listener's routes. Each concern registers its own routes from its own file here:
//! metrics and health below; TLS reload in `tls.rs`; the operator API under `/admin/`
//! (`sessions.rs`, `close.rs`, `ip_rules.rs`, `reload.rs`); CPU profiles in `pprof.rs` drawn by
//! `flame.rs`; the live-node view (`GET /admin/cluster`) in `cluster.rs`; Lua reload in `crate::lua`; the operations console page (`GET /console`, which holds
//! no data: it fetches the guarded routes with the token the operator types) in `console.rs`. Every `/admin/` route (TLS reload included), `/debug/`
//! and `/lua/` are behind the bearer-token guard of `auth.rs`, registered once per prefix.
//!
//! Handlers run on the admin thread. They reach the shards only through control commands
//! ([`ControlHandle`]), waiting at most `admin.control_wait_ms` for the answers.

pub mod flame;
pub mod pprof;
pub mod tls;

pub mod auth;
mod close;
pub mod cluster;
pub mod console;
mod ip_rules;
mod json;
mod reload;
mod sessions;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_runtime::control::ControlHandle;
use lattice_runtime::net::tls::TlsSource;
use lattice_runtime::telemetry::admin::{Response, Routes};
use lattice_runtime::telemetry::metrics::Metrics;

use crate::config::Config;

/// What the admin routes can reach.
pub struct AdminCx {
    /// Every family `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// `[profile]`: bounds of `GET /debug/pprof/profile`.
    pub profile: pprof::ProfileConfig,
    /// The Lua scripts, for `POST /lua/reload`.
    pub lua: Option<Arc<crate::lua::Scripts>>,
    /// The shards' control lanes and the acceptor's settings (`None`: no operator API).
    pub control: Option<ControlHandle>,
    /// The bearer token of `/admin/`.
    pub token: String,
    /// How long to wait for the shards' answers.
    pub wait: Duration,
    /// The configuration in force (what `POST /admin/reload` compares a new load with).
    pub config: Arc<Mutex<Config>>,
    /// The TLS listener's certificate source, when TLS is on.
    pub tls: Option<Arc<TlsSource>>,
    /// The live-node view for `GET /admin/cluster` (`None`: none, as in tests of the admin alone).
    pub cluster: Option<cluster::ClusterCx>,
}

/// Every route of the admin listener.
pub fn routes(cx: AdminCx) -> Routes {
    let mut r = Routes::default();
    let metrics = cx.metrics.clone();
    r.add(
        "GET",
        "/metrics",
        Box::new(move |_| {
            Response::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render(),
            )
        }),
    )
    .add("GET", "/healthz", Box::new(|_| Response::text(200, "ok\n")));
    console::register(&mut r);
    pprof::register(&mut r, cx.profile);
    crate::lua::register(&mut r, cx.lua);
    // Before any /admin/ route exists: every one of them, and every unknown /admin/ path, is
    // behind it.
    r.guard_prefix("/admin/", auth::guard(cx.token.clone()));
    // Profiling (CPU cost, a detached thread) and script reload are operator actions too.
    r.guard_prefix("/debug/", auth::guard(cx.token.clone()));
    r.guard_prefix("/lua/", auth::guard(cx.token.clone()));
    // After the token: the parameters each operator route takes.
    for prefix in ["/admin/", "/debug/"] {
        r.guard_prefix(
            prefix,
            Box::new(|req| {
                let (_, allowed) = QUERY_PARAMS.iter().find(|(p, _)| *p == req.path)?;
                req.check_query(allowed)
                    .err()
                    .map(|e| Response::error(400, &e))
            }),
        );
    }
    if let Some(control) = &cx.control {
        let cx = Arc::new(Api {
            control: control.clone(),
            wait: cx.wait,
            config: cx.config.clone(),
        });
        sessions::register(&mut r, &cx);
        close::register(&mut r, &cx);
        ip_rules::register(&mut r, &cx);
        reload::register(&mut r, &cx);
    }
    tls::add(&mut r, cx.tls);
    cluster::register(&mut r, cx.cluster);
    r
}

/// The query parameters of each `/admin/` and `/debug/` route: any other, or one given twice, is
/// a 400. (An unknown path is left to its 404.)
const QUERY_PARAMS: &[(&str, &[&str])] = &[
    ("/admin/sessions", &["shard", "peer", "state", "limit"]),
    ("/admin/close", &[]),
    ("/admin/ip-rules", &[]),
    ("/admin/reload", &["close_matching"]),
    ("/admin/cluster", &[]),
    ("/admin/tls/reload", &[]),
    ("/debug/pprof/profile", &["seconds"]),
];

/// What the operator API's handlers share.
pub(crate) struct Api {
    pub control: ControlHandle,
    pub wait: Duration,
    pub config: Arc<Mutex<Config>>,
}

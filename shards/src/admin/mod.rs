//! The admin listener's routes. Each concern registers its own routes from its own file here
//! (metrics and health below; the admin API, the console and profiling add theirs).

pub mod flame;
pub mod pprof;

use std::sync::Arc;

use lattice_runtime::telemetry::admin::{Response, Routes};
use lattice_runtime::telemetry::metrics::Metrics;

/// What the admin routes can reach.
pub struct AdminCx {
    /// Every family `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// `[profile]`: bounds of `GET /debug/pprof/profile`.
    pub profile: pprof::ProfileConfig,
    /// The Lua scripts, for `POST /lua/reload`.
    pub lua: Option<Arc<crate::lua::Scripts>>,
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
    pprof::register(&mut r, cx.profile);
    crate::lua::register(&mut r, cx.lua);
    r
}

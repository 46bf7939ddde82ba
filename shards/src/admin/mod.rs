//! The admin listener's routes. Each concern registers its own routes from its own file here
//! (metrics and health below; TLS reload in `tls.rs`; CPU profiles in `pprof.rs` drawn by
//! `flame.rs`; Lua reload in `crate::lua`; the admin API and the console add theirs).

pub mod flame;
pub mod pprof;
pub mod tls;

use std::sync::Arc;

use lattice_runtime::net::tls::TlsSource;
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
    /// The TLS listener's certificate source, when TLS is on.
    pub tls: Option<Arc<TlsSource>>,
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
    tls::add(&mut r, cx.tls);
    r
}

//! `lattice run`: load config, start the shards, the admin listener and the signal watch; on
//! SIGTERM/SIGINT drain and stop; on SIGHUP reload the TLS certificate and key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lattice_proto::{error_code, pb};
use lattice_runtime::net::tls::{TlsServing, TlsSource};
use lattice_runtime::telemetry::admin::AdminServer;
use lattice_runtime::time::LastFired;
use lattice_runtime::{OperatorSettings, RefusalFrames, Server};
use lattice_storage::{Migration, Schema, Storage, StorageHandle, Value};
use prost::Message;

use crate::app::{App, AppSettings};
use crate::center::lease::{LeaseStore, StorageLeases};
use crate::center::Center;
use crate::cluster::etcd::leases::EtcdLeases;
use crate::cluster::etcd::{EtcdConfig, EtcdStats};
use crate::cluster::members::Members;
use crate::config::Config;
use crate::metrics::AppMetrics;
use crate::service::calendar;

/// Exit codes of `lattice run`.
pub mod exit {
    /// Clean shutdown.
    pub const OK: i32 = 0;
    /// Start-up or runtime failure.
    pub const FAILURE: i32 = 1;
    /// Bad configuration or usage.
    pub const CONFIG: i32 = 2;
}

/// The tables and migrations of every service: the center's lease table (written directly, not
/// through write-behind, so it has a migration but no table spec), the calendar's last-fired times,
/// accounts and profiles, and icons. Migration versions are global: a new one takes the next
/// number.
pub fn schema() -> Schema {
    let tables = [
        calendar::table_spec(),
        crate::logic::account::store::name_spec(),
        crate::logic::account::store::account_spec(),
        crate::logic::account::store::profile_spec(),
        crate::logic::icons::table_spec(),
    ];
    let mut s = Schema::new();
    for t in tables {
        s = s
            .table(t.expect("built-in table specs are valid"))
            .expect("built-in table names are unique");
    }
    s.migration(Migration::portable(
        1,
        "machine-id leases",
        &[&lattice_storage::lease::ddl()],
    ))
    .migration(calendar::migration(2))
    .migration(crate::logic::account::store::migration(3))
    .migration(crate::logic::icons::migration(4))
}

/// The persisted calendar last-fired times of shards `0..n` (blocking; before the shards start).
fn load_calendar(h: &StorageHandle, n: usize, timeout: Duration) -> Result<Vec<LastFired>, String> {
    let t = h
        .table(calendar::TABLE)
        .ok_or_else(|| format!("table {} missing from the schema", calendar::TABLE))?;
    (0..n)
        .map(|shard| {
            let row = h
                .load(t, vec![Value::Int(shard as i64)])
                .and_then(|ticket| ticket.wait_timeout(timeout))
                .map_err(|e| format!("calendar state of shard {shard}: {e}"))?;
            Ok(row.map(|v| calendar::from_row(&v)).unwrap_or_default())
        })
        .collect()
}

/// Every stored icon (blocking; before the shards start).
fn load_icons(
    cfg: &Config,
    h: &StorageHandle,
    timeout: Duration,
) -> Result<crate::logic::icons::IconSet, String> {
    let icfg: crate::logic::icons::IconsConfig =
        lattice_runtime::config::typed_section(&cfg.table, "icons").map_err(|e| e.to_string())?;
    let rows = h
        .query(crate::logic::icons::SELECT_ALL, Vec::new())
        .and_then(|t| t.wait_timeout(timeout))
        .map_err(|e| e.to_string())?;
    let set = crate::logic::icons::IconSet::from_rows(
        rows,
        icfg.served_max(cfg.net.max_frame),
        icfg.max_total_bytes,
    );
    tracing::info!(icons = set.manifest().icons.len(), "icons loaded");
    Ok(set)
}

/// A section the server reads itself (profile, alerts, lua), or the config exit code after
/// printing the one-line error.
fn section<T: serde::de::DeserializeOwned>(table: &toml::Table, name: &str) -> Result<T, i32> {
    lattice_runtime::config::typed_section(table, name).map_err(|e| {
        eprintln!("lattice: {e}");
        exit::CONFIG
    })
}

/// Reloads the TLS certificate and key (`why`: what asked for it) and logs the outcome. New
/// handshakes use the new certificate; live sessions go on with theirs.
pub fn reload_tls(tls: Option<&TlsSource>, why: &str) {
    match tls {
        None => tracing::warn!(
            by = why,
            "tls: nothing to reload (tls.cert and tls.key are not set)"
        ),
        Some(source) => match source.reload() {
            Ok(l) => tracing::info!(
                by = why,
                generation = l.generation,
                certificates = l.chain_len,
                cert = %source.cert_path().display(),
                "tls: certificate reloaded; new handshakes use it, live sessions keep theirs"
            ),
            Err(e) => tracing::error!(
                by = why,
                key = e.key(),
                error = %e,
                "tls: reload failed; the previous certificate stays in use"
            ),
        },
    }
}

/// The application's settings from the configuration alone (storage, ids, Lua scripts and the
/// cluster are added by [`run`] as they come up). Errors are configuration errors.
fn app_settings(cfg: &Config, n: usize) -> Result<AppSettings, String> {
    let calendar = cfg
        .calendar
        .calendar()
        .map_err(|e| format!("calendar: {e}"))?;
    Ok(AppSettings {
        table: cfg.table.clone(),
        compress: cfg.compress,
        max_frame: cfg.net.max_frame,
        storage: None,
        metrics: Arc::new((0..n).map(|_| AppMetrics::default()).collect()),
        ids: None,
        calendar: Some(calendar),
        calendar_last: Arc::new(Vec::new()),
        lua: None,
        rpc_timeout: Duration::from_millis(cfg.http.rpc_timeout_ms),
        ws_path: cfg.http.ws_path.clone(),
        cluster: None,
    })
}

/// The Lua scripts of `lua.dir`, loaded in a scratch state and asked `check_args` with this
/// process's command line and the merged configuration (`None` without `lua.dir`).
fn open_scripts(
    lua: &crate::lua::LuaConfig,
    cfg: &Config,
    n: usize,
) -> Result<Option<Arc<crate::lua::Scripts>>, String> {
    let args: Vec<String> = std::env::args().collect();
    crate::lua::Scripts::open(lua, n, &args, &cfg.table)
}

/// What `lattice run` checks before it touches anything (no file written, no port bound, no
/// database opened): the sections the server reads itself, the calendar, the Lua scripts with
/// their `check_args`, and every component's section. `lattice config` runs it, so a
/// configuration it prints is one `lattice run` does not refuse with exit code 2 for these.
pub fn check(cfg: &Config) -> Result<(), String> {
    let n = cfg.runtime.shard_count();
    // The data directory's admin token file, read as the start reads it (one that is not there
    // is made at start: nothing is written here).
    if !cfg.admin.listen.is_empty() && cfg.admin.token.is_empty() {
        let path = crate::admin::auth::token_path(&cfg.storage.data_dir);
        if path.exists() {
            crate::admin::auth::read_token(&path).map_err(|e| e.to_string())?;
        }
    }
    let (_, _, lua) = own_sections(cfg)?;
    let mut settings = app_settings(cfg, n)?;
    settings.lua = open_scripts(&lua, cfg, n)?;
    App::new(&settings, 0, n)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The sections the server reads itself: `[profile]`, `[alerts]` and `[lua]`.
fn own_sections(
    cfg: &Config,
) -> Result<
    (
        crate::admin::pprof::ProfileConfig,
        crate::alerts::AlertsConfig,
        crate::lua::LuaConfig,
    ),
    String,
> {
    fn typed<T: serde::de::DeserializeOwned>(cfg: &Config, name: &str) -> Result<T, String> {
        lattice_runtime::config::typed_section(&cfg.table, name).map_err(|e| e.to_string())
    }
    Ok((
        typed(cfg, "profile")?,
        typed(cfg, "alerts")?,
        typed(cfg, "lua")?,
    ))
}

/// Runs the server until a signal asks it to stop. Returns the process exit code.
pub fn run(mut cfg: Config) -> i32 {
    // First of all: a SIGTERM/SIGINT during start-up (the waits for the machine-id lease can take
    // seconds) stops the start with exit 0 instead of killing the process mid-way.
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGHUP, &hup),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, flag.clone()) {
            eprintln!("lattice: cannot install signal handler: {e}");
            return exit::FAILURE;
        }
    }
    let n = cfg.runtime.shard_count();
    // One name for the node everywhere: two processes with distinct `cluster.node_id`s on one
    // host must not both lease their machine id as the host name (the second took the first's).
    let name = cfg.node_name();
    cfg.cluster.node_id = name.clone();
    cfg.center.node = name;
    // One server per data directory: a second one would append to the same journal and take the
    // first one's machine id. Held until the process ends.
    let _dir_lock = match crate::datadir::lock(&cfg.storage.data_dir) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("lattice: {e}");
            return exit::FAILURE;
        }
    };
    // The journal directory may lie outside the data directory: two servers sharing it would lose
    // each other's acknowledged writes. An SQLite file may be shared (as a MariaDB is), but not
    // restored under a server that uses it.
    let _journal_lock = match crate::datadir::lock_journal(&cfg.storage.journal_dir()) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("lattice: {e}");
            return exit::FAILURE;
        }
    };
    let _sqlite_lock = if cfg.storage.backend == lattice_storage::BackendKind::Sqlite {
        match crate::datadir::lock_sqlite(&cfg.storage.sqlite_path(), true) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("lattice: {e}");
                return exit::FAILURE;
            }
        }
    } else {
        None
    };
    // The admin token before any listener opens: an unreadable or malformed token file is a
    // configuration error (exit 2), not a failure after the server began serving.
    let mut admin_token = if cfg.admin.listen.is_empty() {
        None
    } else {
        match crate::admin::auth::resolve(&cfg.admin.token, &cfg.storage.data_dir) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("lattice: {e}");
                return exit::CONFIG;
            }
        }
    };
    if let Err(e) = crate::logic::account::secret::resolve(&mut cfg) {
        eprintln!("lattice: {e}");
        return exit::FAILURE;
    }
    let mut settings = match app_settings(&cfg, n) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lattice: {e}");
            return exit::CONFIG;
        }
    };
    // alerts.stall_ms, alerts.webhook and alerts.ca_file were checked with the configuration.
    let (profile, alerts_cfg, lua_cfg) = match own_sections(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lattice: {e}");
            return exit::CONFIG;
        }
    };
    let scripts = match open_scripts(&lua_cfg, &cfg, n) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lattice: {e}");
            return exit::CONFIG;
        }
    };
    if scripts.is_some() {
        tracing::info!(dir = %lua_cfg.dir, "lua scripts loaded and checked");
    }
    settings.lua = scripts.clone();
    // Build once on this thread so a bad component section is a config error, not a shard crash.
    if let Err(e) = App::new(&settings, 0, n) {
        eprintln!("lattice: {e}");
        return exit::CONFIG;
    }
    if stopped_in_start_up(&stop) {
        tracing::info!(code = exit::OK, "stopped");
        return exit::OK;
    }
    // Read and checked when the configuration was loaded (a bad file is a config error).
    let tls = cfg.tls_source.clone();
    // Storage first: its journal and dump file are replayed before any client is accepted.
    let storage = match Storage::open_until(cfg.storage.clone(), schema(), stop.clone()) {
        Ok(s) => s,
        // A signal while opening (connection retries to a database that is down): the stop the
        // operator asked for, not a failure; the journal and dump file stay for the next start.
        Err(e) if stopped_in_start_up(&stop) => {
            tracing::warn!(error = %e, "storage not opened");
            tracing::info!(code = exit::OK, "stopped");
            return exit::OK;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot open storage");
            eprintln!("lattice: storage: {e}");
            return exit::FAILURE;
        }
    };
    tracing::info!(
        backend = cfg.storage.backend.as_str(),
        database = %cfg.storage.database_name(),
        journal = %cfg.storage.journal_dir().display(),
        "storage open"
    );
    settings.storage = Some(storage.handle());
    let op_timeout = Duration::from_millis(cfg.storage.op_timeout_ms.saturating_mul(2));
    match load_calendar(&storage.handle(), n, op_timeout) {
        Ok(v) => settings.calendar_last = Arc::new(v),
        Err(e) => {
            eprintln!("lattice: storage: {e}");
            return exit::FAILURE;
        }
    }
    // Icons are read before clients are accepted, so the manifest follows every first Welcome.
    match load_icons(&cfg, &storage.handle(), op_timeout) {
        Ok(set) => crate::logic::icons::preload(set),
        Err(e) => {
            eprintln!("lattice: icons: {e}");
            return exit::FAILURE;
        }
    }
    if stopped_in_start_up(&stop) {
        return close_early(storage);
    }
    // With [etcd], machine ids are leased in etcd and the node registers there (docs/CLUSTER.md);
    // without, the storage database holds the lease and the node is alone.
    let etcd_cfg: EtcdConfig = match section(&cfg.table, "etcd") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let etcd_stats = Arc::new(EtcdStats::default());
    let me = crate::cluster::etcd::node::node_info(&cfg);
    if etcd_cfg.enabled()
        && me.roles.contains(&crate::cluster::members::Role::Logic)
        && me.internal_addr.is_empty()
    {
        tracing::warn!(node = %me.node_id, "registered in etcd as a logic node without an internal listener (listeners.extra with session = \"internal\"): gates cannot link to it and do not route to it");
    }
    if etcd_cfg.enabled() {
        // Before the center touches the ids: a second process under a live node's name must not
        // take that node's machine id over.
        if let Err(e) = crate::cluster::etcd::membership::wait_name_free(
            &etcd_cfg,
            &me.node_id,
            etcd_stats.clone(),
        ) {
            tracing::error!(error = %e, "etcd: cannot register this node");
            eprintln!("lattice: etcd: {e}");
            return exit::FAILURE;
        }
        if stopped_in_start_up(&stop) {
            return close_early(storage);
        }
    }
    let lease_store: Result<Box<dyn LeaseStore>, crate::center::CenterError> = if etcd_cfg.enabled()
    {
        EtcdLeases::open(&etcd_cfg, etcd_stats.clone())
            .map(|s| Box::new(s) as Box<dyn LeaseStore>)
            .map_err(crate::center::CenterError::from)
    } else {
        StorageLeases::open(&cfg.storage)
            .map(|s| Box::new(s) as Box<dyn LeaseStore>)
            .map_err(crate::center::CenterError::from)
    };
    // The center leases the machine id before any service starts: no lease, no server.
    let center = match lease_store
        .and_then(|store| Center::start_unless(&cfg.center, store, n, crate::center::now_ms, &stop))
    {
        Ok(c) => c,
        Err(crate::center::CenterError::Stopped) => {
            stopped_in_start_up(&stop);
            return close_early(storage);
        }
        Err(e) => {
            tracing::error!(error = %e, "center: cannot lease a machine id");
            eprintln!("lattice: center: {e}");
            return exit::FAILURE;
        }
    };
    settings.ids = Some((center.lease(), center.floor_ms()));
    let center_stats = center.stats();
    let center_lease = center.lease();
    if stopped_in_start_up(&stop) {
        center.stop();
        return close_early(storage);
    }
    let app_metrics = settings.metrics.clone();
    let watch_metrics = settings.metrics.clone();
    // The live-node view: written by etcd's discovery thread when [etcd] is configured (from the
    // moment this node serves, below), else published once from `cluster.static_peers`.
    let members = Arc::new(Members::new());
    // Node links follow that view.
    let cluster = match crate::cluster::node::ClusterNode::start(
        &cfg.cluster,
        crate::cluster::link::client::LinkWire {
            max_frame: cfg.net.max_frame,
            compress: cfg.compress,
        },
        n,
        members.clone(),
        !etcd_cfg.enabled(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lattice: cluster: {e}");
            center.stop();
            return exit::CONFIG;
        }
    };
    settings.cluster = Some(cluster.clone());
    // Before the shards start, so no request goes uncounted.
    let opcodes = crate::host::opcode_metrics::init(n);
    let tls_serving = tls.as_ref().map(|source| TlsServing {
        source: source.clone(),
        settings: cfg.tls.settings(),
    });
    let ops = OperatorSettings {
        continuity: cfg.continuity.clone(),
        refusals: RefusalFrames {
            rate_limited: rate_limited_frame(),
        },
    };
    let mut server = match Server::start_listeners(
        &cfg.runtime,
        &cfg.net,
        &cfg.listener_specs,
        cfg.listeners.backlog,
        tls_serving,
        &cfg.shutdown,
        &ops,
        move |shard| App::new(&settings, shard, n).expect("services were validated before start"),
    ) {
        Ok(s) => {
            s.metrics()
                .add_renderer(move |w| AppMetrics::render(&app_metrics, w));
            let h = storage.handle();
            s.metrics()
                .add_renderer(move |w| crate::metrics::render_storage(&h.metrics(), w));
            s.metrics()
                .add_renderer(move |w| center_stats.render(&center_lease, w));
            s.metrics()
                .add_renderer(move |w| crate::center::render_id_metrics(n, w));
            s.metrics()
                .add_renderer(move |w| crate::logic::account::metrics::render(n, w));
            s.metrics()
                .add_renderer(lattice_runtime::telemetry::log_writer::render);
            s.metrics().add_renderer(crate::alerts::render);
            if let Some(l) = scripts.clone() {
                s.metrics().add_renderer(move |w| l.render(w));
            }
            s.metrics()
                .add_renderer(move |w| crate::host::opcode_metrics::render(opcodes, w));
            let c = cluster.clone();
            s.metrics().add_renderer(move |w| c.render(w));
            if lattice_runtime::allocator_duties() {
                s.metrics()
                    .add_renderer(lattice_runtime::telemetry::alloc_metrics::render);
            }
            if etcd_cfg.enabled() {
                let st = etcd_stats.clone();
                s.metrics().add_renderer(move |w| st.render(w));
            }
            s
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("lattice: {e}");
            center.stop();
            return exit::FAILURE;
        }
    };
    // Serving: join the cluster (the node appears in other nodes' views from here on).
    let mut etcd = None;
    if etcd_cfg.enabled() {
        match crate::cluster::etcd::membership::start_as(
            &etcd_cfg,
            me.clone(),
            members.clone(),
            etcd_stats.clone(),
            center.instance().to_string(),
        ) {
            Ok(h) => etcd = Some(h),
            Err(e) => {
                tracing::error!(error = %e, "etcd: cannot register this node");
                eprintln!("lattice: etcd: {e}");
                server.shutdown();
                let _ = server.join();
                center.stop();
                return exit::FAILURE;
            }
        }
    }
    let admin = if cfg.admin.listen.is_empty() {
        None
    } else {
        let token = match admin_token.take() {
            Some((token, source)) => {
                match source {
                    crate::admin::auth::TokenSource::Config => {
                        tracing::info!("admin token: from admin.token")
                    }
                    crate::admin::auth::TokenSource::File(p) => {
                        tracing::info!(path = %p.display(), "admin token: read from its file")
                    }
                    crate::admin::auth::TokenSource::Generated(p) => {
                        tracing::info!(path = %p.display(), "admin token: generated (mode 0600)")
                    }
                }
                token
            }
            // Resolved before anything started (below the data directory's lock).
            None => unreachable!("the admin token is resolved at the start of run"),
        };
        let routes = crate::admin::routes(crate::admin::AdminCx {
            metrics: server.metrics(),
            profile,
            lua: scripts.clone(),
            control: Some(server.control()),
            token,
            wait: Duration::from_millis(cfg.admin.control_wait_ms),
            config: Arc::new(std::sync::Mutex::new(cfg.clone())),
            tls: tls.clone(),
            // The view this node routes by: etcd's, else the static peers published at start.
            cluster: Some(crate::admin::cluster::ClusterCx {
                members: members.clone(),
                node_id: me.node_id.clone(),
                etcd: etcd.as_ref().map(|h| h.stats()),
            }),
        });
        match AdminServer::start(&cfg.admin.listen, routes) {
            Ok(a) => {
                tracing::info!(addr = %a.local_addr(), "admin listening (GET /metrics, /healthz; /admin/ API, /debug/pprof/profile and /lua/reload with the bearer token)");
                Some(a)
            }
            Err(e) => {
                let e = format!("cannot listen on admin.listen {}: {e}", cfg.admin.listen);
                tracing::error!(error = %e, "cannot start");
                eprintln!("lattice: {e}");
                server.shutdown();
                let _ = server.join();
                center.stop();
                return exit::FAILURE;
            }
        }
    };
    let alerts = match crate::alerts::start(
        &alerts_cfg,
        crate::alerts::Sources {
            shards: server.watch(),
            app: watch_metrics,
            storage: Some(storage.handle()),
        },
        &cfg.storage.data_dir,
    ) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "alerts not started");
            None
        }
    };
    crate::crash::inject_if_asked();
    let mut code = exit::OK;
    loop {
        if stop.load(Ordering::SeqCst) {
            tracing::info!("shutdown requested by signal");
            break;
        }
        if hup.swap(false, Ordering::SeqCst) {
            reload_tls(tls.as_deref(), "SIGHUP");
        }
        if server.any_shard_finished() {
            tracing::error!("a shard stopped unexpectedly; shutting down");
            code = exit::FAILURE;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Leave the cluster first: other nodes stop routing here before the drain starts.
    if let Some(h) = etcd.take() {
        h.stop();
    }
    server.shutdown();
    let stop_bound = (cfg.shutdown.stop_timeout_ms > 0)
        .then(|| Duration::from_millis(cfg.shutdown.stop_timeout_ms));
    if let Err(e) = server.join_within(stop_bound) {
        tracing::error!(error = %e, "shard failure");
        eprintln!("lattice: {e}");
        code = exit::FAILURE;
    }
    // The shards are gone: nothing waits on the links any more (their last words go now), so
    // they stop before anything else can hold the exit up.
    cluster.stop();
    if let Some(a) = admin {
        a.stop();
    }
    // Every shard has stopped and reported its last id: release the machine id.
    center.stop();
    // Flush what is dirty and stop the storage threads. Records the final flush appended to the
    // dump file (rows the database refused) are named: nothing is lost (they replay at the next
    // start), but the database does not hold them yet.
    let handle = storage.handle();
    let dumps_before = handle.metrics().dumps;
    match storage.shutdown() {
        Ok(()) => match handle.metrics().dumps - dumps_before {
            0 => tracing::info!("storage flushed and closed"),
            n => tracing::warn!(
                dumped = n,
                pending = handle.metrics().dump_pending,
                path = %cfg.storage.dump_path().display(),
                "storage closed; the final flush sent {n} record(s) to the dump file (replayed at the next start, not in the database yet)"
            ),
        },
        Err(e) => {
            tracing::error!(error = %e, "storage shutdown failed; unflushed marks stay in the journal for the next start");
            code = exit::FAILURE;
        }
    }
    if lattice_runtime::allocator_duties() {
        // Multi-line: for allocator work, at DEBUG (`log.level = "debug"`).
        tracing::debug!(report = %lattice_runtime::alloc::leak_report(), "allocator: still live at shutdown");
    }
    if let Some(a) = alerts {
        a.stop();
    }
    if code == exit::OK {
        crate::alerts::clean_exit(&cfg.storage.data_dir);
    }
    tracing::info!(code, "stopped");
    code
}

/// True (and logged) when a SIGTERM/SIGINT arrived before the server began serving.
fn stopped_in_start_up(stop: &AtomicBool) -> bool {
    let stopped = stop.load(Ordering::SeqCst);
    if stopped {
        tracing::info!("shutdown requested during start-up; stopping before serving");
    }
    stopped
}

/// Ends a start stopped by a signal once storage is open (and the machine id released, if it was
/// leased): flushes and closes storage; exit 0, or 1 when that fails.
fn close_early(storage: Storage) -> i32 {
    let code = match storage.shutdown() {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!(error = %e, "storage shutdown failed; unflushed marks stay in the journal for the next start");
            exit::FAILURE
        }
    };
    tracing::info!(code, "stopped");
    code
}

/// The frame a connection refused by `limits.ip_conns_per_s` gets (policy `error`).
fn rate_limited_frame() -> Vec<u8> {
    let e = pb::Error {
        code: error_code::RATE_LIMITED,
        message: "too many new connections from this address (limits.ip_conns_per_s)".into(),
        opcode: 0,
    };
    lattice_wire::frame::encode(lattice_proto::opcode::ERROR, 0, 0, &e.encode_to_vec())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_table_the_services_write_is_in_the_schema() {
        let s = super::schema();
        let names: Vec<&str> = s.tables().iter().map(|t| t.name()).collect();
        for t in [
            crate::service::calendar::TABLE,
            crate::logic::account::store::NAMES,
            crate::logic::account::store::ACCOUNTS,
            crate::logic::account::store::PROFILES,
            crate::logic::icons::TABLE,
        ] {
            assert!(names.contains(&t), "{t} missing from server::schema()");
        }
        lattice_storage::migrate::check(s.migrations()).expect("migrations are consistent");
    }
}

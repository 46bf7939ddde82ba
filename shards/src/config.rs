//! The server's configuration: the runtime's sections plus every section a service, a component or
//! the storage engine owns.
//!
//! The schema is the concatenation of documented defaults: `deploy/lattice.toml` (runtime, net,
//! compress, log, admin, shutdown), the storage engine's `[storage]`, and each declared service's
//! and component's own section. A key that is in none of them is an error naming it; a new
//! component adds its section by declaring it, without editing anything here.

use std::path::Path;
use std::sync::Arc;

use lattice_runtime::config::{self, typed_section, ConfigError, Layers};
use lattice_runtime::net::access::{AccessConfig, AccessRules};
use lattice_runtime::net::continuity::{ContinuityConfig, LimitsConfig, SessionConfig};
use lattice_runtime::net::listener::{listener_specs, HttpConfig, ListenerSpec, ListenersConfig};
use lattice_runtime::net::tls::{TlsConfig, TlsSource};
use lattice_runtime::net::NetConfig;
use lattice_runtime::telemetry::log::LogConfig;
use lattice_runtime::{RuntimeConfig, ShutdownConfig};

/// The smallest `net.max_frame`: the server's own frames (`Welcome`, `Error` with its message)
/// must fit with room to spare.
pub const MIN_MAX_FRAME: u32 = 1024;
/// The smallest `net.read_buffer` (the shards never read into less).
pub const MIN_READ_BUFFER: usize = 4096;
/// The largest `runtime.uring_entries` (the kernel's `IORING_MAX_ENTRIES`).
pub const MAX_URING_ENTRIES: u32 = 32768;
/// The smallest `log.queue_lines`: a normal start logs a few dozen lines before the writer runs.
pub const MIN_LOG_QUEUE_LINES: usize = 256;
use lattice_storage::StorageConfig;
use lattice_wire::compress::CompressConfig;

use crate::service::registry::services;
use crate::service::COMPONENTS;

/// The runtime's documented defaults (`deploy/lattice.toml`).
pub const DEFAULTS: &str = include_str!("../../deploy/lattice.toml");

/// The whole schema: every section's documented defaults, runtime first, then storage, services
/// and components (by section name).
pub fn schema() -> String {
    let mut parts: Vec<(&str, &str)> = services().iter().map(|s| (s.name, s.defaults)).collect();
    parts.extend(
        COMPONENTS
            .iter()
            .filter(|c| !c.defaults.trim().is_empty())
            .map(|c| (c.section, c.defaults)),
    );
    parts.sort_by_key(|p| p.0);
    let mut s = String::from(DEFAULTS);
    for text in
        std::iter::once(lattice_storage::config::DEFAULTS).chain(parts.into_iter().map(|p| p.1))
    {
        s.push('\n');
        s.push_str(text.trim_end());
        s.push('\n');
    }
    s
}

/// `[admin]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin listen address; empty = off.
    pub listen: String,
    /// Bearer token of the `/admin/` API; empty = generated into the data directory.
    pub token: String,
    /// How long an admin request waits for the shards' answers, in ms.
    pub control_wait_ms: u64,
}

/// Where a configuration came from, so `POST /admin/reload` can load it again the same way.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `--config FILE`.
    pub file: Option<std::path::PathBuf>,
    /// The `LATTICE_*` environment at start.
    pub env: Vec<(String, String)>,
    /// `--section.key value` overrides.
    pub args: Vec<(String, String)>,
}

impl Origin {
    /// `e` with the layer its key was set in (`--key`, `environment NAME`, the file) where it
    /// only says "merged configuration": checks made after merging (ranges, pairs of keys) know
    /// the key, not where its value came from. A key no layer set keeps that wording (its
    /// default conflicts with another key).
    fn locate(&self, e: ConfigError) -> ConfigError {
        match e {
            ConfigError::BadValue {
                key,
                problem,
                origin,
            } if origin == "merged configuration" => {
                let origin = self.layer_of(&key).unwrap_or(origin);
                ConfigError::BadValue {
                    key,
                    problem,
                    origin,
                }
            }
            other => other,
        }
    }

    /// Where `key` (`section.key`, perhaps followed by `[i]` or `.field`) was last set.
    fn layer_of(&self, key: &str) -> Option<String> {
        let (section, rest) = key.split_once('.')?;
        let name = rest.split(['.', '[']).next()?;
        let path = format!("{section}.{name}");
        if self.args.iter().any(|(k, _)| *k == path) {
            return Some(format!("--{path}"));
        }
        let env_form = format!("LATTICE_{section}__{name}");
        if let Some((n, _)) = self
            .env
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(&env_form))
        {
            return Some(format!("environment {n}"));
        }
        let file = self.file.as_ref()?;
        let text = std::fs::read_to_string(file).ok()?;
        let table: toml::Table = text.parse().ok()?;
        table
            .get(section)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key(name))
            .then(|| file.display().to_string())
    }
}

/// Everything `lattice run` reads itself; services and components read their own sections from
/// [`Config::table`] when they are built.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[net]`.
    pub net: NetConfig,
    /// `[compress]`.
    pub compress: CompressConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[shutdown]`.
    pub shutdown: ShutdownConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[center]`.
    pub center: crate::center::CenterConfig,
    /// `[calendar]`.
    pub calendar: crate::service::CalendarSection,
    /// `[cluster]`.
    pub cluster: crate::cluster::config::ClusterConfig,
    /// `[session]`, `[limits]`, `[access]`.
    pub continuity: ContinuityConfig,
    /// `[tls]`.
    pub tls: TlsConfig,
    /// The certificate and key named by `[tls]`, read and checked at load (so a bad file is a
    /// configuration error); `None` when TLS is off.
    pub tls_source: Option<Arc<TlsSource>>,
    /// `[listeners]`.
    pub listeners: ListenersConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// The listeners the shards serve (from `net.listen`, `[listeners]`, `[http]` and `[tls]`).
    pub listener_specs: Vec<ListenerSpec>,
    /// The merged table.
    pub table: toml::Table,
    /// Where it was loaded from.
    pub origin: Origin,
}

impl Config {
    /// This node's one name, for everything that names it (its etcd key, its links, its
    /// machine-id lease): `cluster.node_id`, else `center.node`, else the host name.
    pub fn node_name(&self) -> String {
        let id = self.cluster.node_id.trim();
        if id.is_empty() {
            self.center.node_name()
        } else {
            id.to_string()
        }
    }

    /// Loads defaults < `file` < `LATTICE_*` environment < `args`, then checks every value.
    pub fn load(
        file: Option<&Path>,
        env: Vec<(String, String)>,
        args: Vec<(String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("LATTICE_"))
            .collect();
        let origin = Origin {
            file: file.map(Path::to_path_buf),
            env,
            args,
        };
        Self::load_merged(origin.clone()).map_err(|e| origin.locate(e))
    }

    fn load_merged(origin: Origin) -> Result<Config, ConfigError> {
        let schema = schema();
        let (file, env, args) = (origin.file.as_deref(), &origin.env, &origin.args);
        let table = config::load(&Layers {
            defaults: &schema,
            file,
            env: env.clone(),
            args: args.clone(),
        })?;
        let cfg = Config {
            runtime: typed_section(&table, "runtime")?,
            net: typed_section(&table, "net")?,
            compress: typed_section(&table, "compress")?,
            log: typed_section(&table, "log")?,
            admin: typed_section(&table, "admin")?,
            shutdown: typed_section(&table, "shutdown")?,
            storage: typed_section(&table, "storage")?,
            center: typed_section(&table, "center")?,
            calendar: typed_section(&table, "calendar")?,
            cluster: typed_section(&table, "cluster")?,
            continuity: ContinuityConfig {
                session: typed_section::<SessionConfig>(&table, "session")?,
                limits: typed_section::<LimitsConfig>(&table, "limits")?,
                access: typed_section::<AccessConfig>(&table, "access")?,
            },
            tls: typed_section(&table, "tls")?,
            tls_source: None,
            listeners: typed_section(&table, "listeners")?,
            http: typed_section(&table, "http")?,
            listener_specs: Vec::new(),
            table,
            origin,
        };
        let mut cfg = cfg;
        cfg.listener_specs = listener_specs(&cfg.net, &cfg.listeners, &cfg.http, &cfg.tls)
            .map_err(|e| ConfigError::BadValue {
                key: e.key,
                problem: e.problem,
                origin: "merged configuration".into(),
            })?;
        cfg.validate()?;
        if cfg.tls.enabled() {
            let source = cfg.tls.load().map_err(|e| ConfigError::BadValue {
                key: e.key().into(),
                problem: e.to_string(),
                origin: "merged configuration".into(),
            })?;
            cfg.tls_source = Some(Arc::new(source));
        }
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: &str| ConfigError::BadValue {
            key: key.into(),
            problem: problem.into(),
            origin: "merged configuration".into(),
        };
        if self.net.max_frame < MIN_MAX_FRAME {
            return Err(bad(
                "net.max_frame",
                &format!("must be at least {MIN_MAX_FRAME} (the server's own frames, Welcome and Error, must fit)"),
            ));
        }
        if self.net.read_buffer < MIN_READ_BUFFER {
            return Err(bad(
                "net.read_buffer",
                &format!("must be at least {MIN_READ_BUFFER}"),
            ));
        }
        if self.net.max_connections == 0 {
            return Err(bad(
                "net.max_connections",
                "must be at least 1 (0 would refuse every connection)",
            ));
        }
        if !(1..=MAX_URING_ENTRIES).contains(&self.runtime.uring_entries) {
            return Err(bad(
                "runtime.uring_entries",
                &format!("must be 1..={MAX_URING_ENTRIES} (the kernel's limit)"),
            ));
        }
        if self.log.queue_lines < MIN_LOG_QUEUE_LINES {
            return Err(bad(
                "log.queue_lines",
                &format!(
                    "must be at least {MIN_LOG_QUEUE_LINES} (a smaller queue drops lines of a normal start)"
                ),
            ));
        }
        if self.net.send_buffer_limit == 0 {
            return Err(bad("net.send_buffer_limit", "must be greater than 0"));
        }
        if self.net.internal_send_buffer_limit == 0 {
            return Err(bad(
                "net.internal_send_buffer_limit",
                "must be greater than 0",
            ));
        }
        if self.http.ws_echo_path == self.http.ws_path {
            return Err(bad(
                "http.ws_echo_path",
                "must differ from http.ws_path (the echo endpoint would take the game's WebSocket)",
            ));
        }
        for (key, path) in [
            ("http.ws_path", &self.http.ws_path),
            ("http.ws_echo_path", &self.http.ws_echo_path),
        ] {
            if crate::http::is_route(path) {
                return Err(bad(
                    key,
                    &format!("{path} is a route of the HTTP listener (/, /healthz, /lattice.js, /rpc/…, /icons/…)"),
                ));
            }
        }
        if self.runtime.ring_capacity < 2 {
            return Err(bad("runtime.ring_capacity", "must be at least 2"));
        }
        if self.runtime.mesh_batch == 0 {
            return Err(bad("runtime.mesh_batch", "must be at least 1"));
        }
        if self.runtime.shards > 256 {
            return Err(bad("runtime.shards", "at most 256 shards"));
        }
        if self.runtime.mesh_backlog_limit == 0 {
            return Err(bad("runtime.mesh_backlog_limit", "must be at least 1"));
        }
        if self.runtime.queued_budget == 0 {
            return Err(bad("runtime.queued_budget", "must be at least 1"));
        }
        if self.runtime.control_capacity == 0 {
            return Err(bad(
                "runtime.control_capacity",
                "must be at least 1 (shutdown itself is a control command)",
            ));
        }
        if self.runtime.timer_max_timers < 1024 {
            return Err(bad(
                "runtime.timer_max_timers",
                "must be at least 1024 (every session's idle deadline is a timer)",
            ));
        }
        if self.runtime.timer_max_fire_per_pass == 0 {
            return Err(bad("runtime.timer_max_fire_per_pass", "must be at least 1"));
        }
        if self.compress.level > 9 {
            return Err(bad("compress.level", "must be 0..=9"));
        }
        if let Err((key, problem)) = self.storage.check() {
            return Err(bad(key, &problem));
        }
        if let Err((key, problem)) = self.center.validate() {
            return Err(bad(key, &problem));
        }
        let etcd: crate::cluster::etcd::EtcdConfig = typed_section(&self.table, "etcd")?;
        if let Err((key, problem)) = etcd.validate() {
            return Err(bad(key, &problem));
        }
        if let Err((key, problem)) = self.cluster.validate() {
            return Err(bad(key, &problem));
        }
        if let Err(e) = crate::cluster::config::check_node_name(self.center.node.trim()) {
            return Err(bad("center.node", &e));
        }
        if etcd.enabled() {
            // What etcd publishes is where gates connect: it must name this host.
            let internal = self
                .listener_specs
                .iter()
                .find(|l| l.stack.session_type == lattice_wire::stack::SessionType::Internal);
            if let Some(l) = internal {
                let unspecified = l
                    .addr
                    .parse::<std::net::SocketAddr>()
                    .map(|a| a.ip().is_unspecified())
                    .unwrap_or(false);
                if unspecified {
                    return Err(bad(
                        "listeners.extra",
                        &format!("the internal listener {} is registered in etcd as the address peers connect to: bind it on this host's cluster address, not an unspecified one", l.addr),
                    ));
                }
            }
        }
        if etcd.enabled() && !self.cluster.static_peers.is_empty() {
            return Err(bad(
                "cluster.static_peers",
                "must be empty when etcd.endpoints is set (etcd is then the discovery)",
            ));
        }
        if let Err(e) = self.calendar.calendar() {
            use lattice_runtime::time::CalendarError as E;
            let key = match e {
                E::UnknownTimeZone(_) => "calendar.time_zone",
                E::InvalidResetHour(_) => "calendar.reset_hour",
                E::UnknownWeekday(_) => "calendar.first_weekday",
                _ => "calendar",
            };
            return Err(bad(key, &e.to_string()));
        }
        let account: crate::logic::account::config::AccountConfig =
            typed_section(&self.table, "account")?;
        if let Err(e) = account.validate(true) {
            let (key, problem) = e.split_once(": ").unwrap_or(("account", &e));
            return Err(bad(key, problem));
        }
        let chat: crate::logic::chat::ChatConfig = typed_section(&self.table, "chat")?;
        if chat.max_room_name == 0 {
            return Err(bad("chat.max_room_name", "must be at least 1"));
        }
        if self.log.level.trim().is_empty() {
            return Err(bad("log.level", "must not be empty"));
        }
        if let Err(e) = lattice_runtime::telemetry::log::check_level(&self.log.level) {
            return Err(bad("log.level", &e));
        }
        // The log file's directory is created at start: a path through a regular file can never
        // be (it failed at start with a bare "File exists").
        if !self.log.file.is_empty() {
            let mut p = Path::new(&self.log.file).parent();
            while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
                if dir.exists() {
                    if !dir.is_dir() {
                        return Err(bad(
                            "log.file",
                            &format!("{} is not a directory", dir.display()),
                        ));
                    }
                    break;
                }
                p = dir.parent();
            }
        }
        // What `lattice run` would refuse at start is refused here too, so `lattice config` and
        // an operator's reload catch it before a restart does.
        let alerts: crate::alerts::AlertsConfig = typed_section(&self.table, "alerts")?;
        for (key, v) in [
            ("alerts.queue", alerts.queue as u64),
            ("alerts.per_minute", alerts.per_minute as u64),
            ("alerts.timeout_ms", alerts.timeout_ms),
            ("alerts.check_interval_ms", alerts.check_interval_ms),
        ] {
            if v == 0 {
                // 0 would drop every alert (queue, per_minute) or never wait (timeout, interval)
                // while the log says alerts are on.
                return Err(bad(
                    key,
                    "must be at least 1 (empty alerts.webhook turns alerts off)",
                ));
            }
        }
        if alerts.stall_ms != 0 && alerts.stall_ms < 1500 {
            return Err(bad(
                "alerts.stall_ms",
                &format!(
                    "must be 0 (off) or at least 1500 (an idle shard passes every 500 ms), got {}",
                    alerts.stall_ms
                ),
            ));
        }
        if !alerts.webhook.is_empty() {
            match crate::alerts::feishu::parse_url(&alerts.webhook) {
                Err(e) => return Err(bad("alerts.webhook", &e.to_string())),
                Ok(u) if u.tls => {
                    if let Err(e) = crate::alerts::feishu::tls_config(&alerts.ca_file) {
                        return Err(bad("alerts.ca_file", &e.to_string()));
                    }
                }
                Ok(_) => {}
            }
        }
        // Every service's and component's section, typed as building them reads it, and the
        // sections `lattice run` reads itself.
        crate::service::registry::check_sections(&self.table)?;
        let profile: crate::admin::pprof::ProfileConfig = typed_section(&self.table, "profile")?;
        if let Err((key, problem)) = profile.validate() {
            return Err(bad(key, &problem));
        }
        let lua: crate::lua::LuaConfig = typed_section(&self.table, "lua")?;
        if !lua.dir.is_empty() && !std::path::Path::new(&lua.dir).is_dir() {
            return Err(bad("lua.dir", &format!("{} is not a directory", lua.dir)));
        }
        // 0 would turn the memory bound off (mlua reads it as "no limit"): there is no unlimited.
        if lua.memory_limit == 0 {
            return Err(bad(
                "lua.memory_limit",
                "must be at least 1 (there is no unlimited)",
            ));
        }
        let every = u64::from(crate::lua::sandbox::HOOK_EVERY);
        if lua.instruction_budget < every {
            return Err(bad(
                "lua.instruction_budget",
                &format!(
                    "must be at least {every} (the budget is checked every {every} instructions)"
                ),
            ));
        }
        let c = &self.continuity;
        if let Err((key, problem)) = c.limits.validate(self.net.max_frame) {
            return Err(bad(key, &problem));
        }
        if let Err(e) = AccessRules::new(&c.access) {
            let key = if c.access.allow.contains(&e.text) {
                "access.allow"
            } else {
                "access.deny"
            };
            return Err(bad(key, &e.to_string()));
        }
        if c.session.resume_window_ms == 0 {
            return Err(bad(
                "session.resume_window_ms",
                "must be at least 1 (a session that cannot wait for its Resume cannot resume)",
            ));
        }
        for (key, v) in [
            (
                "session.replay_max_frames",
                c.session.replay_max_frames as u64,
            ),
            (
                "session.replay_max_bytes",
                c.session.replay_max_bytes as u64,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if !self.admin.listen.is_empty() {
            if let Err(problem) =
                lattice_runtime::net::listener::check_listen_addr(&self.admin.listen)
            {
                return Err(bad("admin.listen", &problem));
            }
            if let Some(l) = self
                .listener_specs
                .iter()
                .find(|l| lattice_runtime::net::listener::binds_same(&self.admin.listen, &l.addr))
            {
                return Err(bad(
                    "admin.listen",
                    &format!(
                        "{} is also {} ({}): two listeners cannot bind one port",
                        self.admin.listen,
                        l.config_key(),
                        l.addr
                    ),
                ));
            }
        }
        if !self.admin.token.is_empty() && !crate::admin::auth::usable_token(&self.admin.token) {
            return Err(bad(
                "admin.token",
                "must be visible ASCII (! to ~) with no spaces or control characters: no request could carry it",
            ));
        }
        if self.admin.control_wait_ms == 0 {
            return Err(bad("admin.control_wait_ms", "must be at least 1"));
        }
        if self.tls.enabled() {
            if self.tls.cert.is_empty() {
                return Err(bad("tls.cert", "tls.key is set: give the certificate too"));
            }
            if self.tls.key.is_empty() {
                return Err(bad("tls.key", "tls.cert is set: give the private key too"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_every_key_is_documented() {
        let c = Config::load(None, vec![], vec![]).expect("defaults are valid");
        assert_eq!(c.net.max_frame, 1 << 20);
        let docs = config::key_docs(&schema());
        for section in [
            "runtime", "net", "storage", "logic", "echo", "chat", "session", "limits", "access",
            "center", "calendar", "account", "icons", "etcd", "cluster",
        ] {
            assert!(
                docs.iter()
                    .any(|d| d.key.starts_with(&format!("{section}."))),
                "section {section} missing from the schema"
            );
        }
        for doc in docs {
            assert!(
                !doc.help.is_empty(),
                "{} has no comment in its defaults",
                doc.key
            );
        }
    }

    #[test]
    fn component_sections_are_part_of_the_schema_and_checked() {
        let c = Config::load(None, vec![], vec![("echo.route".into(), "remote".into())]).unwrap();
        assert_eq!(c.table["echo"]["route"].as_str(), Some("remote"));
        let e =
            Config::load(None, vec![], vec![("echo.rout".into(), "remote".into())]).unwrap_err();
        assert!(
            e.to_string().contains("unknown config key `echo.rout`"),
            "{e}"
        );
        let e = Config::load(None, vec![], vec![("nosuch.key".into(), "1".into())]).unwrap_err();
        assert!(e.to_string().contains("`nosuch.key`"), "{e}");
    }

    #[test]
    fn storage_defaults_have_one_source() {
        let c = Config::load(None, vec![], vec![]).unwrap();
        let d = StorageConfig::default();
        assert_eq!(format!("{:?}", c.storage), format!("{d:?}"));
    }

    #[test]
    fn account_and_center_bounds_name_the_key() {
        for (k, v, want) in [
            (
                "account.hash_memory_kib",
                "1024",
                "`account.hash_memory_kib`",
            ),
            ("account.hash_passes", "1", "`account.hash_passes`"),
            ("account.token_secret", "abc", "`account.token_secret`"),
            ("center.reserve_ms", "10", "`center.reserve_ms`"),
            ("calendar.time_zone", "Nowhere/City", "calendar"),
        ] {
            let e = Config::load(None, vec![], vec![(k.into(), v.into())])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{k}: {e}");
        }
    }

    #[test]
    fn continuity_sections_load_and_are_checked() {
        let c = Config::load(
            None,
            vec![("LATTICE_LIMITS__SESSION_MSGS_PER_S".into(), "50".into())],
            vec![("access.deny".into(), r#"["10.0.0.0/8", "::1"]"#.into())],
        )
        .unwrap();
        assert_eq!(c.continuity.limits.session_msgs_per_s, 50);
        assert_eq!(c.continuity.access.deny, ["10.0.0.0/8", "::1"]);
        assert_eq!(c.origin.args.len(), 1);
        assert_eq!(c.origin.env.len(), 1, "only LATTICE_ variables are kept");
        let e = Config::load(
            None,
            vec![],
            vec![("access.deny".into(), r#"["10.0.0.1/8"]"#.into())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`access.deny`") && e.contains("host bits"),
            "{e}"
        );
        let e = Config::load(
            None,
            vec![],
            vec![
                ("limits.session_bytes_per_s".into(), "1000".into()),
                ("limits.session_bytes_burst".into(), "100".into()),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`limits.session_bytes_burst`"), "{e}");
        let e = Config::load(
            None,
            vec![],
            vec![("limits.ip_policy".into(), "maybe".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`limits.ip_policy`"), "{e}");
    }

    #[test]
    fn listeners_default_and_extra_ones_are_checked() {
        let c = Config::load(None, vec![], vec![]).unwrap();
        let l: Vec<(&str, &str)> = c
            .listener_specs
            .iter()
            .map(|s| (s.name.as_str(), s.addr.as_str()))
            .collect();
        assert_eq!(l, [("binary", "0.0.0.0:7100"), ("http", "0.0.0.0:7102")]);
        assert_eq!(c.admin.listen, "127.0.0.1:7101");
        assert_eq!(c.listeners.backlog, 4096);
        let c = Config::load(
            None,
            vec![],
            vec![(
                "listeners.extra".into(),
                r#"[{ addr = "127.0.0.1:7200", stack = "binary", session = "internal" }]"#.into(),
            )],
        )
        .unwrap();
        assert_eq!(c.listener_specs.len(), 3);
        for (extra, needle) in [
            (
                r#"[{ addr = "127.0.0.1:1", stack = "http", session = "internal" }]"#,
                "cannot use stack",
            ),
            (
                r#"[{ addr = "127.0.0.1:1", stack = "binary", session = "client", tls = true }]"#,
                "needs tls.cert and tls.key",
            ),
            (
                r#"[{ addr = "127.0.0.1:1", stack = "quic", session = "client" }]"#,
                "quic",
            ),
        ] {
            let e = Config::load(None, vec![], vec![("listeners.extra".into(), extra.into())])
                .unwrap_err()
                .to_string();
            assert!(e.contains("listeners.extra") && e.contains(needle), "{e}");
        }
        // Two listeners on one port: a configuration error naming both, not a bind failure later.
        for (k, v, needle) in [
            (
                "listeners.http",
                "127.0.0.1:7100",
                "is also net.listen (0.0.0.0:7100)",
            ),
            (
                "admin.listen",
                "127.0.0.1:7102",
                "is also listeners.http (0.0.0.0:7102)",
            ),
            ("admin.listen", "[::]:7100", "is also net.listen"),
        ] {
            let e = Config::load(None, vec![], vec![(k.into(), v.into())])
                .unwrap_err()
                .to_string();
            assert!(e.contains(k) && e.contains(needle), "{e}");
        }
        let e = Config::load(
            None,
            vec![],
            vec![(
                "listeners.extra".into(),
                r#"[{ addr = "127.0.0.1:7200", stack = "binary", session = "internal" }, { addr = "127.0.0.1:7200", stack = "http", session = "client" }]"#.into(),
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("listeners.extra[1]") && e.contains("is also listeners.extra[0]"),
            "{e}"
        );
        // Distinct ports, port 0, and an IPv6 loopback beside 0.0.0.0 are fine.
        for (k, v) in [
            ("listeners.http", "127.0.0.1:0"),
            ("admin.listen", "[::1]:7100"),
        ] {
            Config::load(None, vec![], vec![(k.into(), v.into())]).unwrap();
        }
    }

    #[test]
    fn a_value_refused_after_merging_names_the_layer_it_came_from() {
        let e = |env: Vec<(&str, &str)>, args: Vec<(&str, &str)>, file: Option<&Path>| {
            Config::load(
                file,
                env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
                args.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            )
            .unwrap_err()
            .to_string()
        };
        let m = e(vec![], vec![("net.max_frame", "11")], None);
        assert!(m.ends_with("(from --net.max_frame)"), "{m}");
        let m = e(vec![], vec![("account.ip_lock_failures", "0")], None);
        assert!(
            m.contains("`account.ip_lock_failures`")
                && m.ends_with("(from --account.ip_lock_failures)"),
            "{m}"
        );
        let m = e(vec![("LATTICE_NET__MAX_FRAME", "11")], vec![], None);
        assert!(
            m.ends_with("(from environment LATTICE_NET__MAX_FRAME)"),
            "{m}"
        );
        let dir = std::env::temp_dir().join(format!("lattice-origin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("l.toml");
        std::fs::write(&f, "[net]\nmax_frame = 11\n").unwrap();
        let m = e(vec![], vec![], Some(&f));
        assert!(m.ends_with(&format!("(from {})", f.display())), "{m}");
        // A pair check on a key left at its default keeps the neutral wording.
        let m = e(vec![], vec![("account.password_max_len", "7")], None);
        assert!(m.ends_with("(from merged configuration)"), "{m}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_values_found_before_start_name_their_key() {
        let key_of = |k: &str, v: &str| {
            Config::load(None, vec![], vec![(k.into(), v.into())])
                .err()
                .map(|e| e.to_string())
        };
        for (k, v) in [
            ("net.listen", "nonsense"),
            ("net.listen", "127.0.0.1:99999"),
            ("listeners.http", "nonsense"),
            ("admin.listen", "127.0.0.1"),
            ("net.max_frame", "1023"),
            ("chat.max_room_name", "0"),
            ("runtime.mesh_batch", "0"),
            ("runtime.control_capacity", "0"),
            ("runtime.timer_max_timers", "1023"),
            ("runtime.timer_max_fire_per_pass", "0"),
            ("net.read_buffer", "0"),
            ("net.read_buffer", "4095"),
            ("net.max_connections", "0"),
            ("runtime.uring_entries", "0"),
            ("runtime.uring_entries", "32769"),
            ("log.queue_lines", "0"),
            ("log.queue_lines", "255"),
            ("profile.max_seconds", "0"),
            ("profile.max_seconds", "3601"),
            ("profile.frequency", "0"),
            ("profile.frequency", "-1"),
            ("profile.frequency", "1001"),
            ("admin.token", " "),
            ("admin.token", "a b"),
            ("admin.token", "ab\u{1}c"),
            ("lua.memory_limit", "0"),
            ("lua.instruction_budget", "0"),
            ("lua.instruction_budget", "999"),
            ("http.rpc_timeout_ms", "0"),
            ("log.file", "/proc/self/status/lattice.log"),
            ("alerts.per_minute", "0"),
            ("alerts.timeout_ms", "0"),
            ("alerts.queue", "0"),
            ("alerts.check_interval_ms", "0"),
            ("account.account_lock_failures", "0"),
            ("account.ip_lock_failures", "0"),
        ] {
            let e = key_of(k, v).unwrap_or_else(|| panic!("{k} = {v} was accepted"));
            assert!(e.contains(&format!("`{k}`")), "{k} = {v}: {e}");
        }
        for (k, v) in [
            ("net.listen", "localhost:0"),
            ("net.listen", "[::1]:7100"),
            ("admin.listen", ""),
            ("net.max_frame", "1024"),
            ("icons.max_icon_bytes", "2000000"),
            ("net.read_buffer", "4096"),
            ("runtime.uring_entries", "3"),
            ("log.queue_lines", "256"),
            ("log.keep", "0"),
            ("log.warn_burst", "0"),
            ("profile.max_seconds", "3600"),
            ("profile.frequency", "1000"),
            ("lua.memory_limit", "1"),
            ("lua.instruction_budget", "1000"),
        ] {
            assert_eq!(key_of(k, v), None, "{k} = {v}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        let e = Config::load(None, vec![], vec![("net.max_frame".into(), "4".into())]).unwrap_err();
        assert!(e.to_string().contains("`net.max_frame`"), "{e}");
        let e = Config::load(
            None,
            vec![],
            vec![("runtime.driver".into(), "kqueue".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`runtime.driver`") && e.contains("kqueue"),
            "{e}"
        );
    }
}

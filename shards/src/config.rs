//! The server's configuration: one typed struct whose defaults are `deploy/lattice.toml`.

use std::path::Path;

use lattice_core::config::{self, ConfigError, Layers};
use lattice_core::net::compress::CompressConfig;
use lattice_core::net::NetConfig;
use lattice_core::runtime::{RuntimeConfig, ShutdownConfig};
use lattice_core::storage::StorageConfig;
use lattice_core::telemetry::log::LogConfig;

use crate::logic::chat::ChatConfig;
use crate::logic::echo::LogicConfig;

/// The built-in defaults (and the documentation of every key).
pub const DEFAULTS: &str = include_str!("../../deploy/lattice.toml");

/// `[compress]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressSection {
    /// Bodies longer than this are compressed.
    pub threshold: usize,
    /// Cap on an inflated body.
    pub max_inflated: usize,
    /// zlib level.
    pub level: u32,
}

impl From<&CompressSection> for CompressConfig {
    fn from(c: &CompressSection) -> Self {
        CompressConfig {
            threshold: c.threshold,
            max_inflated: c.max_inflated,
            level: c.level,
        }
    }
}

/// `[admin]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin listen address; empty = off.
    pub listen: String,
}

/// Everything `lattice run` reads.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[net]`.
    pub net: NetConfig,
    /// `[compress]`.
    pub compress: CompressSection,
    /// `[log]`.
    pub log: LogConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[shutdown]`.
    pub shutdown: ShutdownConfig,
    /// `[logic]`.
    pub logic: LogicConfig,
    /// `[chat]`.
    pub chat: ChatConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// The merged table (components read their sections from it).
    #[serde(skip)]
    pub table: toml::Table,
}

impl Config {
    /// Loads defaults < `file` < `LATTICE_*` environment < `args`, then checks every value.
    pub fn load(
        file: Option<&Path>,
        env: Vec<(String, String)>,
        args: Vec<(String, String)>,
    ) -> Result<Config, ConfigError> {
        let table = config::load(&Layers {
            defaults: DEFAULTS,
            file,
            env,
            args,
        })?;
        let mut cfg: Config = config::typed(&table)?;
        cfg.table = table;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: &str| ConfigError::BadValue {
            key: key.into(),
            problem: problem.into(),
            origin: "merged configuration".into(),
        };
        if self.net.max_frame < 12 {
            return Err(bad(
                "net.max_frame",
                "must be at least 12 (the frame header)",
            ));
        }
        if self.net.send_buffer_limit == 0 {
            return Err(bad("net.send_buffer_limit", "must be greater than 0"));
        }
        if self.runtime.ring_capacity < 2 {
            return Err(bad("runtime.ring_capacity", "must be at least 2"));
        }
        if self.runtime.shards > 256 {
            return Err(bad("runtime.shards", "at most 256 shards"));
        }
        if self.compress.level > 9 {
            return Err(bad("compress.level", "must be 0..=9"));
        }
        if let Err(e) = self.storage.validate() {
            return Err(bad("storage", &e.to_string()));
        }
        if self.log.level.trim().is_empty() {
            return Err(bad("log.level", "must not be empty"));
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
        for doc in config::key_docs(DEFAULTS) {
            assert!(
                !doc.help.is_empty(),
                "{} has no comment in deploy/lattice.toml",
                doc.key
            );
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

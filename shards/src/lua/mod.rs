//! Lua 5.4 scripts: one sandboxed state per shard ([`host::LuaHost`]), loaded from the `*.lua`
//! files of `lua.dir` in name order.
//!
//! Scripts handle client requests by message name, hook calendar events and check the start-up
//! arguments (the API is in `host.rs`). Each call runs under `lua.instruction_budget` and the state
//! under `lua.memory_limit` (a script cannot catch its way past either: `sandbox.rs`); a script
//! error, a runaway loop or a memory hog answers the request with an `INTERNAL` error frame, is
//! counted (`lattice_lua_errors_total`) and logged, and the shard goes on. `POST /lua/reload` on the admin listener re-reads the directory, checks the new
//! scripts in a scratch state (a broken script changes nothing and answers 422), then bumps a
//! generation every shard compares at its next script call, reloading its own state there.

pub mod host;
pub mod sandbox;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lattice_runtime::telemetry::admin::{Response, Routes};

use host::{LuaHost, ScriptError};
use sandbox::Limits;

/// `[lua]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuaConfig {
    /// Directory of `*.lua` scripts; empty = no scripts.
    pub dir: String,
    /// Bytes one shard's state may allocate.
    pub memory_limit: usize,
    /// Lua instructions one call may run.
    pub instruction_budget: u64,
}

lattice_runtime::shard_counters! {
    /// Script counters of one shard.
    pub struct LuaMetrics("lattice_lua") {
        calls_total: Counter, "Calls into this shard's scripts (requests and calendar hooks).";
        errors_total: Counter, "Script calls that failed (Lua error, instruction budget, memory limit, bad reply, no reply to a request id); requests were answered INTERNAL.";
        reloads_total: Counter, "Times this shard reloaded its scripts.";
        generation: Gauge, "Script generation this shard runs (POST /lua/reload increments it; a shard whose load failed keeps the one before, 0 = none).";
        memory_bytes: Gauge, "Bytes this shard's Lua state uses.";
    }
}

/// The scripts every shard loads, and the generation that tells shards to reload.
pub struct Scripts {
    dir: PathBuf,
    limits: Limits,
    sources: Mutex<Arc<Vec<(String, String)>>>,
    generation: AtomicU64,
    /// The command line and merged configuration `check_args` accepted at start: a reload's
    /// scripts are asked about them too.
    started_with: (Vec<String>, toml::Table),
    /// Per-shard counters.
    pub metrics: Vec<LuaMetrics>,
}

/// A Lua error as one line: its message, then where in a script it was raised when the message
/// does not say (the first `file.lua:N` of the traceback); the traceback's other lines go.
/// Configuration errors are one line each (README).
fn one_line(e: &str) -> String {
    let mut lines = e.lines();
    let first = lines.next().unwrap_or_default().trim().to_string();
    let at = lines
        .map(str::trim)
        .find(|l| l.contains(".lua:"))
        .and_then(|l| l.split(": in ").next());
    match at {
        Some(at) if !first.contains(at) => format!("{first} (at {at})"),
        _ => first,
    }
}

/// Reads every `*.lua` file of `dir`, in name order.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("lua.dir {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lua"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::fs::read_to_string(&p)
                .map(|s| (name, s))
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

/// Loads `sources` into a scratch state as each of the `shards` shards would (a script may read
/// `lattice.shard`), one after the other, and returns shard 0's: a syntax or top-level error of
/// any of them is one line, naming the shard when there are several.
fn load(sources: &[(String, String)], limits: Limits, shards: usize) -> Result<LuaHost, String> {
    let mut first = None;
    for shard in 0..shards.max(1) {
        let h = LuaHost::load(sources, limits, shard, shards).map_err(|e| {
            let e = one_line(&e.to_string());
            if shards > 1 {
                format!("lua (loaded as shard {shard}): {e}")
            } else {
                format!("lua: {e}")
            }
        })?;
        first.get_or_insert(h);
    }
    Ok(first.expect("at least one shard"))
}

/// Asks the scripts' `check_args(args, config)`: a refusal is `refused` with its reason.
fn ask(h: &LuaHost, args: &[String], config: &toml::Table, refused: &str) -> Result<(), String> {
    match h.check_args(args, config) {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(format!("{refused}: {why}")),
        Err(e) => Err(format!(
            "lua check_args failed: {}",
            one_line(&e.to_string())
        )),
    }
}

impl Scripts {
    /// Reads the scripts of `cfg.dir` for `shards` shards, loads them into a scratch state (a
    /// syntax or top-level error is reported here, before any shard starts) and asks their
    /// `check_args` with `args` (the command line) and `config` (the merged configuration).
    /// `Ok(None)` when `dir` is empty.
    pub fn open(
        cfg: &LuaConfig,
        shards: usize,
        args: &[String],
        config: &toml::Table,
    ) -> Result<Option<Arc<Scripts>>, String> {
        if cfg.dir.is_empty() {
            return Ok(None);
        }
        let limits = Limits {
            memory: cfg.memory_limit,
            instructions: cfg.instruction_budget,
        };
        let sources = read_dir(Path::new(&cfg.dir))?;
        let h = load(&sources, limits, shards)?;
        ask(&h, args, config, "lua check_args refused to start")?;
        Ok(Some(Arc::new(Scripts {
            dir: PathBuf::from(&cfg.dir),
            limits,
            sources: Mutex::new(Arc::new(sources)),
            generation: AtomicU64::new(1),
            started_with: (args.to_vec(), config.clone()),
            metrics: (0..shards).map(|_| LuaMetrics::default()).collect(),
        })))
    }

    fn current(&self) -> Arc<Vec<(String, String)>> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the directory and checks it (loading, then `check_args` with what the server
    /// started with: scripts it could not have started with are not taken either); on success the
    /// shards reload at their next call. Returns the new generation and the handled messages.
    pub fn reload(&self) -> Result<(u64, Vec<&'static str>), String> {
        let sources = read_dir(&self.dir)?;
        let h = load(&sources, self.limits, self.metrics.len())?;
        let (args, config) = &self.started_with;
        ask(
            &h,
            args,
            config,
            "lua check_args refuses the running server's command line and configuration",
        )?;
        *self.sources.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(sources);
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        Ok((g, h.handled()))
    }

    /// Renders the per-shard counters.
    pub fn render(&self, w: &mut lattice_runtime::telemetry::prom::Writer<'_>) {
        LuaMetrics::render(&self.metrics, w);
    }
}

/// One shard's scripts: its state, rebuilt when the generation moves.
pub struct LuaShard {
    scripts: Arc<Scripts>,
    shard: usize,
    generation: u64,
    host: Option<LuaHost>,
}

impl LuaShard {
    /// The state of shard `shard`, loaded now.
    pub fn new(scripts: Arc<Scripts>, shard: usize) -> LuaShard {
        let mut s = LuaShard {
            scripts,
            shard,
            generation: 0,
            host: None,
        };
        s.refresh();
        s
    }

    /// Reloads when `POST /lua/reload` moved the generation. A load that fails keeps the old state.
    fn refresh(&mut self) {
        let g = self.scripts.generation.load(Ordering::Relaxed);
        if g == self.generation {
            return;
        }
        let sources = self.scripts.current();
        let m = &self.scripts.metrics[self.shard];
        match LuaHost::load(
            &sources,
            self.scripts.limits,
            self.shard,
            self.scripts.metrics.len(),
        ) {
            Ok(h) => {
                if self.host.is_some() {
                    LuaMetrics::add(&m.reloads_total, 1);
                    tracing::info!(shard = self.shard, generation = g, "lua: scripts reloaded");
                }
                LuaMetrics::set(&m.memory_bytes, h.used_memory() as u64);
                self.host = Some(h);
                // The generation this shard runs: a failed load leaves the one before (0: none).
                LuaMetrics::set(&m.generation, g);
            }
            Err(e) => {
                LuaMetrics::add(&m.errors_total, 1);
                tracing::error!(shard = self.shard, error = %e, "lua: reload failed; keeping the previous scripts");
            }
        }
        // Not tried again until the next reload (a failing load is not repeated on every call).
        self.generation = g;
    }

    /// The state, refreshed, if it handles `opcode`.
    pub fn handler_for(&mut self, opcode: u16) -> Option<&LuaHost> {
        self.refresh();
        self.host.as_ref().filter(|h| h.handles(opcode))
    }

    /// An integer global of this shard's state (tests read what a script recorded).
    #[cfg(test)]
    pub(crate) fn global_i64(&self, name: &str) -> Option<i64> {
        self.host.as_ref().and_then(|h| h.global_i64(name))
    }

    /// Counts one call and its outcome.
    pub fn count(&self, r: &Result<impl Sized, ScriptError>) {
        let m = &self.scripts.metrics[self.shard];
        LuaMetrics::add(&m.calls_total, 1);
        if r.is_err() {
            LuaMetrics::add(&m.errors_total, 1);
        }
        if let Some(h) = &self.host {
            LuaMetrics::set(&m.memory_bytes, h.used_memory() as u64);
        }
    }

    /// Runs the calendar hook of `event` on this shard: the hook the calendar wiring calls.
    pub fn calendar(&mut self, event: &str) -> Result<bool, ScriptError> {
        self.refresh();
        let Some(h) = self.host.as_ref() else {
            return Ok(false);
        };
        let r = h.calendar(event);
        self.count(&r);
        r
    }
}

/// Registers `POST /lua/reload`.
pub fn register(r: &mut Routes, scripts: Option<Arc<Scripts>>) {
    r.add(
        "POST",
        "/lua/reload",
        Box::new(move |req| {
            // Like every admin route: an unknown parameter is a 400, whatever the state.
            if let Err(e) = req.check_query(&[]) {
                return Response::error(400, &e);
            }
            let Some(s) = &scripts else {
                return Response::error(409, "no scripts: lua.dir is empty");
            };
            match s.reload() {
                Ok((g, handled)) => Response::json(
                    200,
                    serde_json::json!({
                        "generation": g,
                        "handles": handled,
                        "note": "each shard reloads at its next script call",
                    })
                    .to_string(),
                ),
                Err(e) => Response::json(
                    422,
                    serde_json::json!({ "error": e, "note": "nothing changed" }).to_string(),
                ),
            }
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn lua_errors_are_one_line_with_their_place() {
        let e = "runtime error: lattice.on: no client message is called \"Nope\"\nstack traceback:\n\t[C]: in field 'on'\n\tb.lua:1: in main chunk\n";
        assert_eq!(
            one_line(e),
            "runtime error: lattice.on: no client message is called \"Nope\" (at b.lua:1)"
        );
        // A message that names its place keeps it once.
        let e = "syntax error: [string \"a.lua\"]:3: unexpected symbol\nstack traceback:\n\ta.lua:3: in main chunk";
        assert_eq!(
            one_line(e),
            "syntax error: [string \"a.lua\"]:3: unexpected symbol (at a.lua:3)"
        );
        assert_eq!(one_line("plain"), "plain");
    }
}

//! Icons over the frame protocol: the manifest (id, name, SHA-256) is pushed to every session after
//! its first `Welcome`, and `GetIcon{id}` answers `IconData` with the PNG bytes, so a client keeps
//! what it has and fetches only icons whose hash changed.
//!
//! The icons live in the `icon` table, written by `lattice tool icons import` (from the folder of
//! PNG files and its description file, `proto/icons/`). `lattice run` reads them before it accepts
//! clients ([`preload`]), so the manifest always directly follows the first `Welcome`; every shard
//! shares the one immutable set. A new import is served after a restart. Without a preloaded set
//! (a host built by tests) shard 0 reads the table at start and hands the set to every shard;
//! sessions that complete their handshake before it arrived get the manifest when it does.

use std::sync::Arc;
use std::time::Duration;

use lattice_proto::{error_code as ec, pb};
use lattice_storage::{Migration, StorageError, TableSpec, Value};
use lattice_wire::SessionId;

use super::LOGIC;
use crate::component;
use crate::service::{Component, Ctx, Registrar, Req};

/// The icon table.
pub const TABLE: &str = "icon";

/// The table spec (the server only reads it; the import tool writes it directly).
pub fn table_spec() -> Result<TableSpec, StorageError> {
    TableSpec::new(TABLE, &["id"], &["name", "description", "hash", "png"])
}

/// The migration creating it.
pub fn migration(version: u32) -> Migration {
    Migration::new(
        version,
        "icons",
        &["CREATE TABLE IF NOT EXISTS icon (id INT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, \
           description TEXT NOT NULL, hash VARBINARY(32) NOT NULL, png MEDIUMBLOB NOT NULL)"],
        &["CREATE TABLE IF NOT EXISTS icon (id INT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, \
           description TEXT NOT NULL, hash BLOB NOT NULL, png BLOB NOT NULL)"],
    )
}

/// The query reading every icon.
pub const SELECT_ALL: &str = "SELECT id, name, hash, png FROM icon ORDER BY id";

/// `[icons]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IconsConfig {
    /// Push the manifest after `Welcome`.
    pub push_manifest: bool,
    /// Largest icon served, bytes.
    pub max_icon_bytes: usize,
    /// Most icon bytes held.
    pub max_total_bytes: usize,
    /// Start-up load retries.
    pub load_retries: u32,
}

impl IconsConfig {
    /// The largest icon served: `max_icon_bytes`, and never more than one `IconData` frame holds
    /// under `net.max_frame` (the frame header, sequence extension, id, hash and field lengths
    /// take up to 72 bytes).
    pub fn served_max(&self, max_frame: u32) -> usize {
        self.max_icon_bytes
            .min((max_frame as usize).saturating_sub(ICON_FRAME_OVERHEAD))
    }
}

/// What an `IconData` frame adds to the PNG bytes: header and sequence extension (20), the id
/// (≤ 6), the hash (34), the PNG field's tag and length (≤ 6), rounded up.
pub const ICON_FRAME_OVERHEAD: usize = 72;

/// One icon.
#[derive(Debug)]
pub struct Icon {
    /// Id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// SHA-256 of `png`.
    pub hash: Vec<u8>,
    /// The PNG bytes.
    pub png: Vec<u8>,
}

/// Every icon, shared read-only by all shards.
#[derive(Debug, Default)]
pub struct IconSet {
    icons: Vec<Icon>,
    manifest: pb::IconManifest,
}

impl IconSet {
    /// Builds the set from query rows `(id, name, hash, png)`, leaving out (and logging) rows that
    /// are malformed, too large, or past the total bound.
    pub fn from_rows(rows: Vec<Vec<Value>>, max_icon: usize, max_total: usize) -> IconSet {
        let mut icons: Vec<Icon> = Vec::new();
        let mut total = 0usize;
        for r in rows {
            let mut it = r.into_iter();
            let (Some(id), Some(name), Some(hash), Some(png)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                tracing::error!("icons: a row without its four columns; left out");
                continue;
            };
            let id = id.as_i64().and_then(|i| u32::try_from(i).ok());
            let name = match name {
                Value::Text(t) => Some(t),
                Value::Bytes(b) => String::from_utf8(b).ok(),
                _ => None,
            };
            let bytes = |v: Value| match v {
                Value::Bytes(b) => Some(b),
                Value::Text(t) => Some(t.into_bytes()),
                _ => None,
            };
            let (Some(id), Some(name), Some(hash), Some(png)) = (id, name, bytes(hash), bytes(png))
            else {
                tracing::error!("icons: a malformed row; left out");
                continue;
            };
            if png.len() > max_icon || total + png.len() > max_total {
                tracing::error!(
                    id,
                    size = png.len(),
                    max_icon,
                    total_so_far = total,
                    "icons: icon past its size bound (icons.max_icon_bytes, and net.max_frame - 72 for the frame that carries it: max_icon here) or past icons.max_total_bytes; left out"
                );
                continue;
            }
            total += png.len();
            icons.push(Icon {
                id,
                name,
                hash,
                png,
            });
        }
        icons.sort_by_key(|i| i.id);
        let manifest = pb::IconManifest {
            icons: icons
                .iter()
                .map(|i| pb::IconInfo {
                    id: i.id,
                    name: i.name.clone(),
                    hash: i.hash.clone(),
                    size: i.png.len() as u32,
                })
                .collect(),
        };
        IconSet { icons, manifest }
    }

    /// The icon with `id`.
    pub fn get(&self, id: u32) -> Option<&Icon> {
        self.icons
            .binary_search_by_key(&id, |i| i.id)
            .ok()
            .map(|i| &self.icons[i])
    }

    /// The manifest message.
    pub fn manifest(&self) -> &pb::IconManifest {
        &self.manifest
    }
}

static PRELOADED: std::sync::OnceLock<Arc<IconSet>> = std::sync::OnceLock::new();

/// Installs the set read before the shards start (the first call wins).
pub fn preload(set: IconSet) {
    let _ = PRELOADED.set(Arc::new(set));
}

/// The set read before the shards start, if any (`GET /icons/{id}` serves from it).
pub fn preloaded() -> Option<Arc<IconSet>> {
    PRELOADED.get().cloned()
}

/// The icons component.
pub struct Icons {
    cfg: IconsConfig,
    shard: usize,
    shards: usize,
    set: Option<Arc<IconSet>>,
    /// Sessions of this shard that completed the handshake before the set arrived.
    waiting: Vec<SessionId>,
    attempts: u32,
}

/// Shard 0 → every shard: the loaded set.
struct Loaded(Arc<IconSet>);

const RETRY_TIMER: u64 = 1;

component!(ICONS, service = LOGIC, order = 30, ty = Icons);

impl Component for Icons {
    type Config = IconsConfig;
    const SECTION: &'static str = "icons";
    const DEFAULTS: &'static str = include_str!("icons.toml");

    fn new(cfg: IconsConfig, shard: usize, shards: usize) -> Self {
        Icons {
            cfg,
            shard,
            shards,
            set: PRELOADED.get().cloned(),
            waiting: Vec::new(),
            attempts: 0,
        }
    }

    fn register(reg: &mut Registrar<Self>) {
        reg.on::<pb::GetIcon>(Icons::get_icon);
    }

    fn start(&mut self, ctx: &mut Ctx<'_>) {
        if self.shard == 0 && self.set.is_none() {
            self.load(ctx);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, token: u64) {
        if token == RETRY_TIMER {
            self.load(ctx);
        }
    }

    fn on_session_ready(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        if !self.cfg.push_manifest {
            return;
        }
        match &self.set {
            Some(set) => ctx.push(session, set.manifest()),
            None => self.waiting.push(session),
        }
    }

    fn on_session_closed(&mut self, _ctx: &mut Ctx<'_>, session: SessionId) {
        if !self.waiting.is_empty() {
            self.waiting.retain(|s| *s != session);
        }
    }

    fn on_internal(
        &mut self,
        ctx: &mut Ctx<'_>,
        payload: Box<dyn std::any::Any + Send>,
    ) -> Option<Box<dyn std::any::Any + Send>> {
        let Loaded(set) = *payload.downcast::<Loaded>().ok()?;
        for s in std::mem::take(&mut self.waiting) {
            ctx.push(s, set.manifest());
        }
        self.set = Some(set);
        None
    }
}

impl Icons {
    fn load(&mut self, ctx: &mut Ctx<'_>) {
        self.attempts += 1;
        let Some(st) = ctx.storage() else {
            return self.publish(ctx, IconSet::default());
        };
        match st.query(SELECT_ALL, Vec::new()) {
            Ok(t) => ctx.then(t, Icons::loaded),
            Err(e) => self.failed(ctx, &e),
        }
    }

    fn loaded(&mut self, ctx: &mut Ctx<'_>, r: Result<Vec<Vec<Value>>, StorageError>) {
        match r {
            Ok(rows) => {
                let max = self.cfg.served_max(ctx.cx.net.max_frame);
                let set = IconSet::from_rows(rows, max, self.cfg.max_total_bytes);
                tracing::info!(icons = set.icons.len(), "icons loaded");
                self.publish(ctx, set);
            }
            Err(e) => self.failed(ctx, &e),
        }
    }

    fn failed(&mut self, ctx: &mut Ctx<'_>, e: &StorageError) {
        if self.attempts <= self.cfg.load_retries
            && ctx.timer_after(Duration::from_secs(1), RETRY_TIMER).is_ok()
        {
            tracing::warn!(error = %e, attempt = self.attempts, "icons: load failed; retrying");
            return;
        }
        tracing::error!(error = %e, "icons: cannot load the icons; serving an empty manifest");
        self.publish(ctx, IconSet::default());
    }

    fn publish(&mut self, ctx: &mut Ctx<'_>, set: IconSet) {
        let set = Arc::new(set);
        for dst in 0..self.shards {
            ctx.send_peer(dst, Box::new(Loaded(set.clone())));
        }
    }

    fn get_icon(&mut self, ctx: &mut Ctx<'_>, req: Req<pb::GetIcon>) {
        let (s, rid, op) = (req.session, req.request_id, req.opcode);
        let Some(set) = &self.set else {
            return ctx.error(s, rid, op, ec::BUSY, "icons are loading, retry later");
        };
        match set.get(req.msg.id) {
            Some(i) => {
                let data = pb::IconData {
                    id: i.id,
                    hash: i.hash.clone(),
                    png: i.png.clone(),
                };
                ctx.reply(s, rid, &data);
            }
            None => ctx.error(s, rid, op, ec::ICON_NOT_FOUND, "no icon with this id"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, name: &str, png: &[u8]) -> Vec<Value> {
        vec![
            Value::Int(id),
            Value::Text(name.into()),
            Value::Bytes(vec![id as u8; 32]),
            Value::Bytes(png.to_vec()),
        ]
    }

    #[test]
    fn sets_are_sorted_bounded_and_skip_bad_rows() {
        let rows = vec![
            row(3, "c", b"ccc"),
            row(1, "a", b"a"),
            vec![Value::Null],
            row(2, "big", &[0; 100]),
            row(4, "d", b"dddd"),
        ];
        let set = IconSet::from_rows(rows, 50, 6);
        let ids: Vec<u32> = set.manifest().icons.iter().map(|i| i.id).collect();
        // 2 is past max_icon; 4 would pass the total (1 + 3 + 4 > 6).
        assert_eq!(ids, [1, 3]);
        assert_eq!(set.get(3).unwrap().png, b"ccc");
        assert!(set.get(2).is_none());
        assert_eq!(set.manifest().icons[1].size, 3);
    }
}

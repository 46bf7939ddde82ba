//! Echo: answers `Ping{payload}` with `Pong{payload}`. Its routing (`echo.route`) makes the same
//! request stay on the receiving shard (`local`), go to the shard its session hashes to (`hash`), or
//! always cross the mesh (`remote`), so the mesh path can be measured.

use lattice_proto::{pb, AnyMessage};
use lattice_wire::SessionId;

use super::route_hash;
use super::LOGIC;
use crate::component;
use crate::service::{Component, Ctx, Registrar, Req, Route};

/// `logic.route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EchoRoute {
    /// Handle on the shard that received the request.
    Local,
    /// Handle on the shard the session id hashes to.
    Hash,
    /// Handle on the next shard (always through the mesh with ≥ 2 shards).
    Remote,
}

/// `[echo]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    /// Echo routing.
    pub route: EchoRoute,
    /// Fault injection for tests: a `Ping` whose payload equals this string panics its handler.
    /// Empty (the default) turns it off.
    pub fault_panic_payload: String,
    /// Fault injection for tests: busy-wait this many microseconds in every `Ping` handler.
    pub fault_spin_us: u64,
}

/// The echo component.
pub struct Echo {
    cfg: EchoConfig,
}

component!(ECHO, service = LOGIC, order = 10, ty = Echo);

impl Component for Echo {
    type Config = EchoConfig;
    const SECTION: &'static str = "echo";
    const DEFAULTS: &'static str = include_str!("echo.toml");

    fn new(cfg: EchoConfig, _shard: usize, _shards: usize) -> Self {
        Echo { cfg }
    }

    fn register(reg: &mut Registrar<Self>) {
        reg.on::<pb::Ping>(Echo::ping);
    }

    fn route(&self, _msg: &AnyMessage, session: SessionId) -> Route {
        match self.cfg.route {
            EchoRoute::Local => Route::Local,
            EchoRoute::Hash => Route::Hash(route_hash(&session.as_u64())),
            EchoRoute::Remote => Route::Next,
        }
    }
}

impl Echo {
    fn ping(&mut self, ctx: &mut Ctx<'_>, req: Req<pb::Ping>) {
        let fault = &self.cfg.fault_panic_payload;
        if !fault.is_empty() && req.msg.payload == fault.as_bytes() {
            panic!("fault injection: Ping payload matched echo.fault_panic_payload");
        }
        if self.cfg.fault_spin_us > 0 {
            let until = std::time::Instant::now()
                + std::time::Duration::from_micros(self.cfg.fault_spin_us);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let pong = pb::Pong {
            payload: req.msg.payload,
        };
        ctx.reply(req.session, req.request_id, &pong);
    }
}

//! The component API: what a game developer writes against.
//!
//! A *service* (logic, …) is a set of components running on every shard, with one bounded inbound
//! queue per shard. A *component* declares, next to its definition, the service it belongs to and
//! its order with [`component!`]; services are declared with [`service!`]. Both are collected at
//! link time (`linkme`), so nobody edits a central list, and naming a service that does not exist
//! does not compile. Each owns its configuration section: its defaults (a TOML snippet with a
//! comment above every key, shown by `lattice --help`) are part of the schema, and its typed
//! settings are injected when it is built. A component registers typed handlers per message and has
//! lifecycle hooks called in order (`init`, `start`) and in reverse order (`stop`).
//!
//! Files: `ctx.rs` what a handler sees and can do (and the messages that puts on the mesh);
//! `registry.rs` the link-time lists and building a service for a shard; `timers.rs` the timer
//! table behind [`Ctx::timer_after`]; `calendar.rs` the game-day events behind
//! [`Component::on_calendar`].

pub(crate) mod calendar;
pub mod ctx;
pub mod registry;
pub(crate) mod timers;

pub use calendar::CalendarSection;
pub use ctx::{Ctx, Encoder, ProxyOut, Req, Route, ShardMsg, TimerId};
pub use lattice_runtime::time::{Boundary, Crossed};
pub use registry::{ComponentDecl, Registrar, ServiceDecl, COMPONENTS, SERVICES};

use lattice_proto::AnyMessage;
use lattice_wire::SessionId;
use serde::de::DeserializeOwned;

/// A component of a service. One instance per shard.
pub trait Component: Sized + 'static {
    /// Typed settings, read from the config section named [`Component::SECTION`].
    type Config: DeserializeOwned;
    /// Config section injected at construction. Two components may not share a section.
    const SECTION: &'static str;
    /// The section's defaults: TOML with a `[SECTION]` header and a `#` comment above every key
    /// (usually `include_str!("my_component.toml")`). Empty when the component has no settings.
    const DEFAULTS: &'static str;

    /// Builds the component for shard `shard` of `shards`.
    fn new(config: Self::Config, shard: usize, shards: usize) -> Self;

    /// Registers handlers.
    fn register(reg: &mut Registrar<Self>);

    /// Where a request for this component is handled. Default: the shard that received it.
    fn route(&self, _msg: &AnyMessage, _session: SessionId) -> Route {
        Route::Local
    }

    /// Called once per shard after every component is built, in order.
    fn init(&mut self, _ctx: &mut Ctx<'_>) {}
    /// Called once per shard after every `init`, in order.
    fn start(&mut self, _ctx: &mut Ctx<'_>) {}
    /// Called at shutdown, in reverse order.
    fn stop(&mut self, _ctx: &mut Ctx<'_>) {}
    /// A session closed somewhere (every shard hears of it).
    fn on_session_closed(&mut self, _ctx: &mut Ctx<'_>, _session: SessionId) {}
    /// A timer set with [`Ctx::timer_after`] or [`Ctx::timer_every`] fired; `token` is the one given.
    fn on_timer(&mut self, _ctx: &mut Ctx<'_>, _token: u64) {}
    /// A calendar boundary passed (`[calendar]`: time zone, reset hour, first weekday): new game
    /// day, week, month or year, in that order when several fall together. `event.count` is 1 in
    /// normal running and N when N boundaries of that kind passed while the server was down: the
    /// missed event is delivered once, at start, after every component's `start`.
    fn on_calendar(&mut self, _ctx: &mut Ctx<'_>, _event: &Crossed) {}
    /// A client session on this shard completed its handshake (its first `Hello` was accepted and
    /// answered with `Welcome`). Called on the session's shard only; not for node links (session
    /// type `internal`), which must hear nothing before their `LinkWelcome`.
    fn on_session_ready(&mut self, _ctx: &mut Ctx<'_>, _session: SessionId) {}
    /// An internal (shard-to-shard) message sent with [`Ctx::send_internal`]; give it back when it
    /// is not one of this component's.
    fn on_internal(
        &mut self,
        _ctx: &mut Ctx<'_>,
        payload: Box<dyn std::any::Any + Send>,
    ) -> Option<Box<dyn std::any::Any + Send>> {
        Some(payload)
    }
}

/// Declares a service: `service!(LOGIC, "logic", include_str!("logic.toml"));`. The defaults hold
/// the service's own section (`queue_limit`, `batch`). The service's index is derived (services in
/// name order); components name the static.
#[macro_export]
macro_rules! service {
    ($static_name:ident, $name:literal, $defaults:expr) => {
        #[linkme::distributed_slice($crate::service::SERVICES)]
        #[linkme(crate = linkme)]
        /// A service declared with `service!`.
        pub static $static_name: $crate::service::ServiceDecl = $crate::service::ServiceDecl {
            name: $name,
            defaults: $defaults,
        };
    };
}

/// Declares a component: `component!(STATIC_NAME, service = LOGIC, order = 10, ty = MyComponent);`
/// A misspelled service is a compile error.
#[macro_export]
macro_rules! component {
    ($static_name:ident, service = $svc:path, order = $order:expr, ty = $ty:ty) => {
        #[linkme::distributed_slice($crate::service::COMPONENTS)]
        #[linkme(crate = linkme)]
        static $static_name: $crate::service::ComponentDecl = $crate::service::ComponentDecl {
            service: &$svc,
            name: stringify!($ty),
            order: $order,
            build: $crate::service::registry::build_erased::<$ty>,
            check: $crate::service::registry::check_section::<$ty>,
            section: <$ty as $crate::service::Component>::SECTION,
            defaults: <$ty as $crate::service::Component>::DEFAULTS,
        };
    };
}

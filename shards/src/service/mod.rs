//! Services and components.
//!
//! A service (gate, logic, …) is a set of components running on every shard. A component declares,
//! next to its definition, the service it belongs to and its order with [`component!`]; the
//! declaration is collected at link time (`linkme`), so nobody edits a central list, and naming a
//! service that does not exist does not compile. Each component gets its typed config section
//! injected when it is built, registers typed handlers per opcode, and has lifecycle hooks called in
//! order (`init`, `start`) and in reverse order (`stop`).

pub mod ctx;
pub mod registry;

pub use ctx::{Ctx, Req, Route};
pub use registry::{
    build_service, ComponentDecl, ErasedComponent, Registrar, ServiceInstance, COMPONENTS,
};

use lattice_proto::{pb, AnyMessage};
use serde::de::DeserializeOwned;

/// A service: a name and the config section holding its settings (`queue_limit`).
#[derive(Debug)]
pub struct ServiceDecl {
    /// Service name, e.g. `"logic"`.
    pub name: &'static str,
    /// Index of the service in the app's service list.
    pub index: usize,
}

/// The logic role: game logic, keyed routing (echo, chat).
pub static LOGIC: ServiceDecl = ServiceDecl {
    name: "logic",
    index: 0,
};

/// Every service, in index order.
pub static SERVICES: [&ServiceDecl; 1] = [&LOGIC];

/// A component of a service. One instance per shard.
pub trait Component: Sized + 'static {
    /// Typed settings, read from the config section named [`Component::SECTION`].
    type Config: DeserializeOwned;
    /// Config section injected at construction.
    const SECTION: &'static str;

    /// Builds the component for shard `shard` of `shards`.
    fn new(config: Self::Config, shard: usize, shards: usize) -> Self;

    /// Registers handlers.
    fn register(reg: &mut Registrar<Self>);

    /// Where a request for this component is handled. Default: the shard that received it.
    fn route(&self, _msg: &AnyMessage, _session: lattice_core::net::SessionId) -> Route {
        Route::Local
    }

    /// Called once per shard after every component is built, in order.
    fn init(&mut self, _ctx: &mut Ctx<'_>) {}
    /// Called once per shard after every `init`, in order.
    fn start(&mut self, _ctx: &mut Ctx<'_>) {}
    /// Called at shutdown, in reverse order.
    fn stop(&mut self, _ctx: &mut Ctx<'_>) {}
    /// A session closed somewhere (every shard hears of it).
    fn on_session_closed(&mut self, _ctx: &mut Ctx<'_>, _session: lattice_core::net::SessionId) {}
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

/// Converts a decoded message back into its type (request messages only).
pub trait FromAny: Sized {
    /// `Some` when `m` holds a `Self`.
    fn from_any(m: AnyMessage) -> Option<Self>;
}

macro_rules! from_any {
    ($($v:ident),* $(,)?) => {$(
        impl FromAny for pb::$v {
            fn from_any(m: AnyMessage) -> Option<Self> {
                match m {
                    AnyMessage::$v(x) => Some(x),
                    _ => None,
                }
            }
        }
    )*};
}
from_any!(Hello, Ping, JoinRoom, Say, Login);

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
            section: <$ty as $crate::service::Component>::SECTION,
        };
    };
}

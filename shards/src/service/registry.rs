//! Link-time component registry and the per-shard service instance.

use std::any::Any;
use std::collections::{HashMap, VecDeque};

use lattice_core::config::{typed_section, ConfigError};
use lattice_core::net::SessionId;
use lattice_core::telemetry::metrics::ShardMetrics;
use lattice_proto::{error_code, AnyMessage, LatticeMessage};

use super::{Component, Ctx, FromAny, Req, Route, ServiceDecl};

/// Every component declared with [`crate::component!`], collected at link time.
#[linkme::distributed_slice]
pub static COMPONENTS: [ComponentDecl];

type Builder = fn(&toml::Table, usize, usize) -> Result<Box<dyn ErasedComponent>, ConfigError>;

/// A component declaration (made by [`crate::component!`]).
pub struct ComponentDecl {
    /// The service the component belongs to.
    pub service: &'static ServiceDecl,
    /// Type name, for logs.
    pub name: &'static str,
    /// Position among the service's components (lifecycle order).
    pub order: i32,
    /// Builds an instance from the merged config.
    pub build: Builder,
    /// Config section injected.
    pub section: &'static str,
}

type Handler<C> = Box<dyn Fn(&mut C, &mut Ctx<'_>, Req<AnyMessage>)>;

/// Collects a component's handlers.
pub struct Registrar<C> {
    handlers: Vec<(u16, Handler<C>)>,
}

impl<C: Component> Registrar<C> {
    /// Handles requests of message type `T` with `f`.
    pub fn on<T: LatticeMessage + FromAny + 'static>(
        &mut self,
        f: fn(&mut C, &mut Ctx<'_>, Req<T>),
    ) {
        self.handlers.push((
            T::OPCODE,
            Box::new(move |c, ctx, req| {
                let Req {
                    session,
                    request_id,
                    opcode,
                    msg,
                } = req;
                match T::from_any(msg) {
                    Some(msg) => f(
                        c,
                        ctx,
                        Req {
                            session,
                            request_id,
                            opcode,
                            msg,
                        },
                    ),
                    None => ctx.error(
                        session,
                        request_id,
                        opcode,
                        error_code::BAD_REQUEST,
                        "message does not match its opcode",
                    ),
                }
            }),
        ));
    }
}

/// A component with its type erased, as the service holds it.
pub trait ErasedComponent {
    /// Type name.
    fn name(&self) -> &'static str;
    /// Opcodes it handles.
    fn opcodes(&self) -> Vec<u16>;
    /// Where a request goes.
    fn route(&self, msg: &AnyMessage, session: SessionId) -> Route;
    /// Handles a request (the opcode is one of [`ErasedComponent::opcodes`]).
    fn handle(&mut self, ctx: &mut Ctx<'_>, req: Req<AnyMessage>);
    /// Lifecycle.
    fn init(&mut self, ctx: &mut Ctx<'_>);
    /// Lifecycle.
    fn start(&mut self, ctx: &mut Ctx<'_>);
    /// Lifecycle.
    fn stop(&mut self, ctx: &mut Ctx<'_>);
    /// A session closed.
    fn on_session_closed(&mut self, ctx: &mut Ctx<'_>, session: SessionId);
    /// An internal message; returned when the component does not take it.
    fn on_internal(
        &mut self,
        ctx: &mut Ctx<'_>,
        payload: Box<dyn Any + Send>,
    ) -> Option<Box<dyn Any + Send>>;
}

struct Holder<C> {
    comp: C,
    handlers: HashMap<u16, Handler<C>>,
}

impl<C: Component> ErasedComponent for Holder<C> {
    fn name(&self) -> &'static str {
        std::any::type_name::<C>()
            .rsplit("::")
            .next()
            .unwrap_or("?")
    }
    fn opcodes(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.handlers.keys().copied().collect();
        v.sort_unstable();
        v
    }
    fn route(&self, msg: &AnyMessage, session: SessionId) -> Route {
        self.comp.route(msg, session)
    }
    fn handle(&mut self, ctx: &mut Ctx<'_>, req: Req<AnyMessage>) {
        if let Some(h) = self.handlers.get(&req.opcode) {
            h(&mut self.comp, ctx, req);
        }
    }
    fn init(&mut self, ctx: &mut Ctx<'_>) {
        self.comp.init(ctx)
    }
    fn start(&mut self, ctx: &mut Ctx<'_>) {
        self.comp.start(ctx)
    }
    fn stop(&mut self, ctx: &mut Ctx<'_>) {
        self.comp.stop(ctx)
    }
    fn on_session_closed(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        self.comp.on_session_closed(ctx, session)
    }
    fn on_internal(
        &mut self,
        ctx: &mut Ctx<'_>,
        payload: Box<dyn Any + Send>,
    ) -> Option<Box<dyn Any + Send>> {
        self.comp.on_internal(ctx, payload)
    }
}

/// Builds component `C` from the merged config (used by [`crate::component!`]).
pub fn build_erased<C: Component>(
    cfg: &toml::Table,
    shard: usize,
    shards: usize,
) -> Result<Box<dyn ErasedComponent>, ConfigError> {
    let config: C::Config = typed_section(cfg, C::SECTION)?;
    let mut reg = Registrar {
        handlers: Vec::new(),
    };
    C::register(&mut reg);
    Ok(Box::new(Holder {
        comp: C::new(config, shard, shards),
        handlers: reg.handlers.into_iter().collect(),
    }))
}

/// One service on one shard: its components, the opcode table and the bounded inbound queue.
pub struct ServiceInstance {
    /// The declaration.
    pub decl: &'static ServiceDecl,
    /// Components in lifecycle order.
    pub components: Vec<Box<dyn ErasedComponent>>,
    /// Opcode → index in `components`.
    pub by_opcode: HashMap<u16, usize>,
    /// Requests waiting: (component index, request).
    pub queue: VecDeque<(usize, Req<AnyMessage>)>,
    /// Most requests `queue` holds; beyond it client requests are dropped with `BUSY`.
    pub queue_limit: usize,
}

/// Why a service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A component's config section is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Two components handle the same opcode.
    #[error("service {service}: opcode {opcode} is handled by both {first} and {second}")]
    DuplicateOpcode {
        /// Service name.
        service: &'static str,
        /// The opcode.
        opcode: u16,
        /// First component.
        first: &'static str,
        /// Second component.
        second: &'static str,
    },
}

/// Builds service `decl` for one shard from every component declared for it, in order.
pub fn build_service(
    decl: &'static ServiceDecl,
    cfg: &toml::Table,
    shard: usize,
    shards: usize,
    queue_limit: usize,
) -> Result<ServiceInstance, BuildError> {
    let mut decls: Vec<&ComponentDecl> = COMPONENTS
        .iter()
        .filter(|c| std::ptr::eq(c.service, decl))
        .collect();
    decls.sort_by_key(|c| (c.order, c.name));
    let mut components = Vec::with_capacity(decls.len());
    let mut by_opcode: HashMap<u16, usize> = HashMap::new();
    for d in decls {
        let comp = (d.build)(cfg, shard, shards)?;
        for op in comp.opcodes() {
            if let Some(&prev) = by_opcode.get(&op) {
                let first: &ErasedComponentRef = &components[prev];
                return Err(BuildError::DuplicateOpcode {
                    service: decl.name,
                    opcode: op,
                    first: first.name(),
                    second: comp.name(),
                });
            }
            by_opcode.insert(op, components.len());
        }
        components.push(comp);
    }
    Ok(ServiceInstance {
        decl,
        components,
        by_opcode,
        queue: VecDeque::new(),
        queue_limit,
    })
}

type ErasedComponentRef = Box<dyn ErasedComponent>;

impl ServiceInstance {
    /// Handles one request, catching a handler panic: it is logged with its message and opcode,
    /// counted, and answered with an `INTERNAL` error; the shard goes on.
    pub fn handle(&mut self, idx: usize, ctx: &mut Ctx<'_>, req: Req<AnyMessage>) {
        let (session, request_id, opcode) = (req.session, req.request_id, req.opcode);
        let comp = &mut self.components[idx];
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| comp.handle(ctx, req)));
        if let Err(p) = r {
            let msg = lattice_core::runtime::shard::panic_message(&*p);
            ShardMetrics::add(&ctx.metrics().handler_panics_total, 1);
            tracing::error!(service = self.decl.name, component = comp.name(), opcode, %session, panic = %msg, "handler panicked");
            ctx.error(
                session,
                request_id,
                opcode,
                error_code::INTERNAL,
                "internal error",
            );
        }
    }

    /// Runs each component's `init`, then each `start`, in order.
    pub fn start(&mut self, ctx: &mut Ctx<'_>) {
        for c in &mut self.components {
            tracing::debug!(service = self.decl.name, component = c.name(), "init");
            c.init(ctx);
        }
        for c in &mut self.components {
            tracing::debug!(service = self.decl.name, component = c.name(), "start");
            c.start(ctx);
        }
    }

    /// Runs each component's `stop`, in reverse order.
    pub fn stop(&mut self, ctx: &mut Ctx<'_>) {
        for c in self.components.iter_mut().rev() {
            tracing::debug!(service = self.decl.name, component = c.name(), "stop");
            c.stop(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use lattice_core::net::compress::BodyCompressor;
    use lattice_core::runtime::ShardCx;
    use lattice_proto::pb;

    use super::*;
    use crate::app::AppMsg;
    use crate::service::ctx::Encoder;

    thread_local! {
        static CALLS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }
    fn record(s: String) {
        CALLS.with(|c| c.borrow_mut().push(s));
    }

    static LIFECYCLE: ServiceDecl = ServiceDecl {
        name: "lifecycle-test",
        index: 99,
    };
    static CLASH: ServiceDecl = ServiceDecl {
        name: "clash-test",
        index: 98,
    };

    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }

    struct First(String);
    struct Second(String);
    struct PingA;
    struct PingB;

    macro_rules! recording {
        ($t:ident, $section:literal) => {
            impl Component for $t {
                type Config = Named;
                const SECTION: &'static str = $section;
                fn new(c: Named, _: usize, _: usize) -> Self {
                    $t(c.name)
                }
                fn register(_: &mut Registrar<Self>) {}
                fn init(&mut self, _: &mut Ctx<'_>) {
                    record(format!("init {}", self.0));
                }
                fn start(&mut self, _: &mut Ctx<'_>) {
                    record(format!("start {}", self.0));
                }
                fn stop(&mut self, _: &mut Ctx<'_>) {
                    record(format!("stop {}", self.0));
                }
            }
        };
    }
    recording!(First, "first");
    recording!(Second, "second");

    macro_rules! pinger {
        ($t:ident) => {
            impl Component for $t {
                type Config = Named;
                const SECTION: &'static str = "first";
                fn new(_: Named, _: usize, _: usize) -> Self {
                    $t
                }
                fn register(reg: &mut Registrar<Self>) {
                    reg.on::<pb::Ping>(|_, _, _| {});
                }
            }
        };
    }
    pinger!(PingA);
    pinger!(PingB);

    // Declared out of order on purpose: `order` decides.
    crate::component!(SECOND_C, service = LIFECYCLE, order = 20, ty = Second);
    crate::component!(FIRST_C, service = LIFECYCLE, order = 10, ty = First);
    crate::component!(PING_A, service = CLASH, order = 1, ty = PingA);
    crate::component!(PING_B, service = CLASH, order = 2, ty = PingB);

    fn cfg() -> toml::Table {
        "[first]\nname = \"a\"\n[second]\nname = \"b\"\n"
            .parse()
            .unwrap()
    }

    fn net() -> lattice_core::net::NetConfig {
        crate::config::Config::load(None, vec![], vec![])
            .unwrap()
            .net
    }

    #[test]
    fn lifecycle_runs_in_order_and_stop_in_reverse_with_injected_config() {
        let mut svc = build_service(&LIFECYCLE, &cfg(), 0, 1, 8).unwrap();
        assert_eq!(svc.components.len(), 2);
        let cx: ShardCx<AppMsg> = ShardCx::standalone(0, 1, net());
        let mut enc = Encoder::new(BodyCompressor::new(Default::default()));
        svc.start(&mut Ctx::new(&cx, &mut enc));
        svc.stop(&mut Ctx::new(&cx, &mut enc));
        let calls = CALLS.with(|c| c.borrow().clone());
        assert_eq!(
            calls,
            ["init a", "init b", "start a", "start b", "stop b", "stop a"]
        );
    }

    #[test]
    fn duplicate_opcode_names_both_components() {
        let e = build_service(&CLASH, &cfg(), 0, 1, 8)
            .err()
            .expect("must fail");
        let text = e.to_string();
        assert!(
            text.contains("opcode 4") && text.contains("PingA") && text.contains("PingB"),
            "{text}"
        );
    }

    #[test]
    fn bad_component_section_names_the_key() {
        let bad: toml::Table = "[first]\nname = 5\n[second]\nname = \"b\"\n"
            .parse()
            .unwrap();
        let e = build_service(&LIFECYCLE, &bad, 0, 1, 8)
            .err()
            .expect("must fail");
        assert!(e.to_string().contains("first.name"), "{e}");
    }
}

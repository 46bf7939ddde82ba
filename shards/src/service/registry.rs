//! The link-time lists of services and components, and building one service for one shard.

use std::any::Any;
use std::collections::VecDeque;

use lattice_proto::{error_code, AnyMessage, LatticeMessage};
use lattice_runtime::config::{typed_section, ConfigError};
use lattice_wire::SessionId;

use super::ctx::{Ctx, Req, Route};
use super::Component;

/// Every service declared with [`crate::service!`], collected at link time.
#[linkme::distributed_slice]
pub static SERVICES: [ServiceDecl];

/// Every component declared with [`crate::component!`], collected at link time.
#[linkme::distributed_slice]
pub static COMPONENTS: [ComponentDecl];

/// A service declaration (made by [`crate::service!`]).
#[derive(Debug)]
pub struct ServiceDecl {
    /// Service name, e.g. `"logic"`; also the name of its config section.
    pub name: &'static str,
    /// The section's defaults (`queue_limit`, `batch`), documented.
    pub defaults: &'static str,
}

/// Every declared service in index order (by name, so the index is the same in every build of
/// the same set of services).
pub fn services() -> Vec<&'static ServiceDecl> {
    let mut v: Vec<&'static ServiceDecl> = SERVICES.iter().collect();
    v.sort_by_key(|s| s.name);
    v
}

/// A service's own settings, from its section.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Requests the service queues per shard before answering `BUSY`.
    pub queue_limit: usize,
    /// Requests the service handles per shard loop pass.
    pub batch: usize,
}

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
    /// Reads the component's config section without building anything (configuration checks:
    /// `lattice config`, `/admin/reload`).
    pub check: fn(&toml::Table) -> Result<(), ConfigError>,
    /// Config section injected.
    pub section: &'static str,
    /// The section's documented defaults.
    pub defaults: &'static str,
}

type Handler<C> = Box<dyn Fn(&mut C, &mut Ctx<'_>, Req<AnyMessage>)>;

/// Collects a component's handlers.
pub struct Registrar<C> {
    handlers: Vec<(u16, Handler<C>)>,
}

impl<C: Component> Registrar<C> {
    /// Handles requests of message type `T` with `f`.
    pub fn on<T: LatticeMessage + 'static>(&mut self, f: fn(&mut C, &mut Ctx<'_>, Req<T>)) {
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
    /// A timer fired.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, token: u64);
    /// A calendar boundary passed.
    fn on_calendar(&mut self, ctx: &mut Ctx<'_>, event: &super::Crossed);
    /// A session of this shard completed its handshake.
    fn on_session_ready(&mut self, ctx: &mut Ctx<'_>, session: SessionId);
    /// An internal message; returned when the component does not take it.
    fn on_internal(
        &mut self,
        ctx: &mut Ctx<'_>,
        payload: Box<dyn Any + Send>,
    ) -> Option<Box<dyn Any + Send>>;
    /// The component itself, for continuations ([`Ctx::then`]).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

struct Holder<C> {
    comp: C,
    /// A component handles few messages: a short vector beats hashing.
    handlers: Vec<(u16, Handler<C>)>,
}

impl<C: Component> ErasedComponent for Holder<C> {
    fn name(&self) -> &'static str {
        std::any::type_name::<C>()
            .rsplit("::")
            .next()
            .unwrap_or("?")
    }
    fn opcodes(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.handlers.iter().map(|h| h.0).collect();
        v.sort_unstable();
        v
    }
    fn route(&self, msg: &AnyMessage, session: SessionId) -> Route {
        self.comp.route(msg, session)
    }
    fn handle(&mut self, ctx: &mut Ctx<'_>, req: Req<AnyMessage>) {
        if let Some((_, h)) = self.handlers.iter().find(|h| h.0 == req.opcode) {
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
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, token: u64) {
        self.comp.on_timer(ctx, token)
    }
    fn on_calendar(&mut self, ctx: &mut Ctx<'_>, event: &super::Crossed) {
        self.comp.on_calendar(ctx, event)
    }
    fn on_session_ready(&mut self, ctx: &mut Ctx<'_>, session: SessionId) {
        self.comp.on_session_ready(ctx, session)
    }
    fn on_internal(
        &mut self,
        ctx: &mut Ctx<'_>,
        payload: Box<dyn Any + Send>,
    ) -> Option<Box<dyn Any + Send>> {
        self.comp.on_internal(ctx, payload)
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        &mut self.comp
    }
}

/// Reads `C`'s config section (as [`build_erased`] would) and drops it.
pub fn check_section<C: Component>(cfg: &toml::Table) -> Result<(), ConfigError> {
    typed_section::<C::Config>(cfg, C::SECTION).map(|_| ())
}

/// Checks every service's and component's config section in `cfg` (what building them reads),
/// without building any component.
/// A section the configuration does not have at all (a declaration without defaults, as tests
/// register) is left to the build, which reports it.
pub fn check_sections(cfg: &toml::Table) -> Result<(), ConfigError> {
    for svc in services() {
        if cfg.contains_key(svc.name) {
            typed_section::<ServiceConfig>(cfg, svc.name)?;
        }
    }
    for c in COMPONENTS.iter() {
        if cfg.contains_key(c.section) {
            (c.check)(cfg)?;
        }
    }
    Ok(())
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
        handlers: reg.handlers,
    }))
}

/// One service on one shard: its components and its bounded inbound queue.
pub struct ServiceInstance {
    /// The declaration.
    pub decl: &'static ServiceDecl,
    /// Its settings.
    pub config: ServiceConfig,
    /// Components in lifecycle order.
    pub components: Vec<Box<dyn ErasedComponent>>,
    /// Requests waiting: (component index, request). Never longer than `config.queue_limit`.
    pub queue: VecDeque<(u16, Req<AnyMessage>)>,
    /// Requests ever put in `queue` (those taken out: this minus its length).
    pub queued_total: u64,
}

/// Why a service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A component's config section is bad.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Two components handle the same opcode.
    #[error("opcode {opcode} is handled by both {first} and {second}")]
    DuplicateOpcode {
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
) -> Result<ServiceInstance, BuildError> {
    let config: ServiceConfig = typed_section(cfg, decl.name)?;
    let mut decls: Vec<&ComponentDecl> = COMPONENTS
        .iter()
        .filter(|c| std::ptr::eq(c.service, decl))
        .collect();
    decls.sort_by_key(|c| (c.order, c.name));
    let components = decls
        .iter()
        .map(|d| (d.build)(cfg, shard, shards))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ServiceInstance {
        decl,
        config,
        components,
        queue: VecDeque::new(),
        queued_total: 0,
    })
}

impl ServiceInstance {
    /// Handles one request, catching a handler panic: it is logged with its message and opcode,
    /// counted, and answered with an `INTERNAL` error; the shard goes on. Always inlined (three
    /// callers in the host): a call of its own cost a frame and a copy of the request per request.
    #[inline(always)]
    pub fn handle(&mut self, idx: u16, ctx: &mut Ctx<'_>, req: Req<AnyMessage>) {
        let (session, request_id, opcode) = (req.session, req.request_id, req.opcode);
        let comp = &mut self.components[idx as usize];
        let t0 = crate::host::opcode_metrics::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| comp.handle(ctx, req)));
        crate::host::opcode_metrics::record(ctx.cx.id, opcode, t0);
        if let Err(p) = r {
            let msg = lattice_runtime::shard::panic_message(&*p);
            crate::metrics::AppMetrics::add(&ctx.metrics.handler_panics_total, 1);
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
}

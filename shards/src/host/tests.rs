//! Service host tests on a standalone shard context (no sockets, no loop).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use lattice_proto::pb;
use lattice_runtime::ShardCx;
use lattice_wire::compress::BodyCompressor;

use super::*;
use crate::service::registry::{build_service, ServiceDecl};
use crate::service::{Component, Registrar};

thread_local! {
    static CALLS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}
fn record(s: String) {
    CALLS.with(|c| c.borrow_mut().push(s));
}
fn calls() -> Vec<String> {
    CALLS.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

// Not in SERVICES: these services exist only for the tests below.
static LIFECYCLE: ServiceDecl = ServiceDecl {
    name: "lifecycle_test",
    defaults: "[lifecycle_test]\n# Queue.\nqueue_limit = 8\n# Batch.\nbatch = 4\n",
};
static CLASH: ServiceDecl = ServiceDecl {
    name: "clash_test",
    defaults: "[clash_test]\n# Queue.\nqueue_limit = 8\n# Batch.\nbatch = 4\n",
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
            const DEFAULTS: &'static str = concat!("[", $section, "]\n# Its name.\nname = \"x\"\n");
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
            fn on_timer(&mut self, _: &mut Ctx<'_>, token: u64) {
                record(format!("timer {} {token}", self.0));
            }
        }
    };
}
recording!(First, "first_test");
recording!(Second, "second_test");

macro_rules! pinger {
    ($t:ident) => {
        impl Component for $t {
            type Config = Named;
            const SECTION: &'static str = "first_test";
            const DEFAULTS: &'static str = "";
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
    "[first_test]\nname = \"a\"\n[second_test]\nname = \"b\"\n\
     [lifecycle_test]\nqueue_limit = 8\nbatch = 4\n[clash_test]\nqueue_limit = 8\nbatch = 4\n"
        .parse()
        .unwrap()
}

fn cx() -> ShardCx<ShardMsg> {
    let net = crate::config::Config::load(None, vec![], vec![])
        .unwrap()
        .net;
    ShardCx::standalone(0, 1, net)
}

fn parts() -> Parts {
    Parts {
        enc: Encoder::new(BodyCompressor::new(Default::default()), 1 << 20),
        timers: TimerTable::default(),
        storage: None,
        metrics: Arc::new(vec![AppMetrics::default()]),
        shard: 0,
        ids: crate::center::ids::IdGen::none(0),
        calendar: None,
        id_metrics: crate::center::id_metrics(0),
    }
}

fn host_of(decls: &[&'static ServiceDecl]) -> Result<ServiceHost, BuildError> {
    let services = decls
        .iter()
        .map(|d| build_service(d, &cfg(), 0, 1))
        .collect::<Result<Vec<_>, _>>()?;
    ServiceHost::with_services(services, parts())
}

#[test]
fn lifecycle_runs_in_order_and_stop_in_reverse_with_injected_config() {
    let cx = cx();
    let mut host = host_of(&[&LIFECYCLE]).unwrap();
    host.start(&cx);
    host.stop(&cx);
    assert_eq!(
        calls(),
        ["init a", "init b", "start a", "start b", "stop b", "stop a"]
    );
}

#[test]
fn duplicate_opcode_names_both_components() {
    let e = host_of(&[&CLASH]).err().expect("must fail");
    let text = e.to_string();
    assert!(
        text.contains("opcode 4") && text.contains("PingA") && text.contains("PingB"),
        "{text}"
    );
}

#[test]
fn bad_component_section_names_the_key() {
    let bad: toml::Table = "[first_test]\nname = 5\n[second_test]\nname = \"b\"\n[lifecycle_test]\nqueue_limit = 8\nbatch = 4\n"
        .parse()
        .unwrap();
    let e = build_service(&LIFECYCLE, &bad, 0, 1)
        .err()
        .expect("must fail");
    assert!(e.to_string().contains("first_test.name"), "{e}");
}

#[test]
fn timers_reach_their_component_once_and_cancelled_ones_never() {
    let cx = cx();
    let mut host = host_of(&[&LIFECYCLE]).unwrap();
    calls();
    let (a, b) = {
        let mut ctx = host.parts.ctx(&cx, Some((0, 1)));
        let a = ctx.timer_after(Duration::from_millis(5), 7).unwrap();
        let b = ctx.timer_after(Duration::from_millis(5), 8).unwrap();
        assert!(ctx.cancel_timer(b));
        assert!(!ctx.cancel_timer(b), "cancel twice");
        (a, b)
    };
    host.timer(&cx, a.0);
    host.timer(&cx, a.0); // a one-shot timer fires once
    host.timer(&cx, b.0); // cancelled: its token finds nothing
    assert_eq!(calls(), ["timer b 7"]);
    assert_eq!(host.parts.timers.len(), 0);
}

struct Waiter(u32);

impl Component for Waiter {
    type Config = Named;
    const SECTION: &'static str = "first_test";
    const DEFAULTS: &'static str = "";
    fn new(_: Named, _: usize, _: usize) -> Self {
        Waiter(0)
    }
    fn register(_: &mut Registrar<Self>) {}
    fn start(&mut self, ctx: &mut Ctx<'_>) {
        ctx.then(async { 40u32 }, |me: &mut Waiter, _ctx, v| me.0 = v + 2);
        // A continuation aimed at the wrong type is dropped, not run.
        ctx.then(async { 1u32 }, |_: &mut First, _ctx, _v| {
            panic!("wrong component")
        });
    }
}

static WAITING: ServiceDecl = ServiceDecl {
    name: "waiting_test",
    defaults: "",
};
crate::component!(WAITER_C, service = WAITING, order = 1, ty = Waiter);

#[test]
fn then_continues_on_the_same_component_after_the_future() {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let cx = cx();
        let services = vec![build_service(&WAITING, &cfg_with_waiting(), 0, 1).unwrap()];
        let mut host = ServiceHost::with_services(services, parts()).unwrap();
        host.start(&cx);
        monoio::time::sleep(Duration::from_millis(1)).await;
        let mut n = 0;
        while let Some(m) = cx.take_message() {
            host.message(&cx, m);
            n += 1;
        }
        assert_eq!(n, 2, "both tasks finished into messages");
        let w = host.services[0].components[0]
            .as_any_mut()
            .downcast_mut::<Waiter>()
            .unwrap();
        assert_eq!(w.0, 42);
    });
}

fn cfg_with_waiting() -> toml::Table {
    let mut t = cfg();
    t.insert(
        "waiting_test".into(),
        toml::Value::Table("queue_limit = 8\nbatch = 4".parse().unwrap()),
    );
    t
}

/// A component that writes a row through `Ctx::storage`, waits for the journal acknowledgement
/// with `Ctx::then`, then reads the row back the same way.
struct Keeper {
    acked: bool,
    loaded: Option<Vec<lattice_storage::Value>>,
}

impl Component for Keeper {
    type Config = Named;
    const SECTION: &'static str = "first_test";
    const DEFAULTS: &'static str = "";
    fn new(_: Named, _: usize, _: usize) -> Self {
        Keeper {
            acked: false,
            loaded: None,
        }
    }
    fn register(_: &mut Registrar<Self>) {}
    fn start(&mut self, ctx: &mut Ctx<'_>) {
        use lattice_storage::Value;
        let s = ctx.storage().expect("storage given");
        let kv = s.table("kv").expect("kv table");
        let ticket = s
            .insert(kv, vec![Value::Int(7)], vec![Value::Int(42)])
            .expect("mark queued");
        ctx.then(ticket, |me: &mut Keeper, ctx, ack| {
            ack.expect("journaled");
            me.acked = true;
            let s = ctx.storage().expect("storage given");
            let kv = s.table("kv").expect("kv table");
            let load = s.load(kv, vec![Value::Int(7)]).expect("read queued");
            ctx.then(load, |me: &mut Keeper, _ctx, row| {
                me.loaded = row.expect("read ran");
            });
        });
    }
}

static KEEPING: ServiceDecl = ServiceDecl {
    name: "keeping_test",
    defaults: "",
};
crate::component!(KEEPER_C, service = KEEPING, order = 1, ty = Keeper);

#[test]
fn components_mark_and_load_rows_through_ctx() {
    use lattice_storage::{Migration, Schema, Storage, StorageConfig, TableSpec, Value};
    let dir = std::env::temp_dir().join(format!("lattice-host-storage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage_cfg = StorageConfig {
        data_dir: dir.clone(),
        ..StorageConfig::default()
    };
    let schema = Schema::new()
        .table(TableSpec::new("kv", &["id"], &["val"]).unwrap())
        .unwrap()
        .migration(Migration::portable(
            1,
            "kv",
            &["CREATE TABLE IF NOT EXISTS kv (id BIGINT NOT NULL PRIMARY KEY, val BIGINT NOT NULL)"],
        ));
    let storage = Storage::open(storage_cfg, schema).unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let cx = cx();
        let mut t = cfg();
        t.insert(
            "keeping_test".into(),
            toml::Value::Table("queue_limit = 8\nbatch = 4".parse().unwrap()),
        );
        let services = vec![build_service(&KEEPING, &t, 0, 1).unwrap()];
        let mut p = parts();
        p.storage = Some(storage.handle());
        let mut host = ServiceHost::with_services(services, p).unwrap();
        host.start(&cx);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            while let Some(m) = cx.take_message() {
                host.message(&cx, m);
            }
            let k = host.services[0].components[0]
                .as_any_mut()
                .downcast_mut::<Keeper>()
                .unwrap();
            if k.loaded.is_some() {
                assert!(k.acked);
                assert_eq!(k.loaded, Some(vec![Value::Int(42)]), "the non-key columns");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no answer from storage"
            );
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    storage.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

// Requests that wait: a local request runs at once only when nothing of its service is queued.
static ORDER: ServiceDecl = ServiceDecl {
    name: "order_test",
    defaults: "[order_test]\n# Queue.\nqueue_limit = 8\n# Batch.\nbatch = 4\n",
};

struct Orderly;

impl Component for Orderly {
    type Config = Named;
    const SECTION: &'static str = "orderly_test";
    const DEFAULTS: &'static str = "[orderly_test]\n# Its name.\nname = \"o\"\n";
    fn new(_: Named, _: usize, _: usize) -> Self {
        Orderly
    }
    fn register(reg: &mut Registrar<Self>) {
        reg.on::<pb::Ping>(|_, _, req| {
            record(format!(
                "ping {}",
                String::from_utf8_lossy(&req.msg.payload)
            ))
        });
    }
}
crate::component!(ORDERLY_C, service = ORDER, order = 1, ty = Orderly);

fn ping_header(request_id: u32) -> FrameHeader {
    FrameHeader::new(16, lattice_proto::opcode::PING, 0, request_id)
}

fn ping(text: &str) -> lattice_proto::AnyMessage {
    pb::Ping {
        payload: text.as_bytes().to_vec(),
    }
    .into()
}

#[test]
fn a_local_request_runs_at_once_unless_its_service_has_requests_queued() {
    let cfg: toml::Table =
        "[order_test]\nqueue_limit = 8\nbatch = 4\n[orderly_test]\nname = \"o\"\n"
            .parse()
            .unwrap();
    let svc = build_service(&ORDER, &cfg, 0, 1).unwrap();
    let mut host = ServiceHost::with_services(vec![svc], parts()).unwrap();
    let cx = cx();
    let info = lattice_proto::info(lattice_proto::opcode::PING).unwrap();
    let session = SessionId::new(0, 1, 1);
    calls();

    // Nothing queued: handled inside `request`.
    host.request(&cx, session, ping_header(1), info, ping("first"));
    assert_eq!(calls(), ["ping first"]);

    // A request queued first (as one from the mesh is): the next local one waits behind it.
    host.message(
        &cx,
        ShardMsg::Request {
            service: 0,
            comp: 0,
            req: Req {
                session,
                request_id: 2,
                opcode: lattice_proto::opcode::PING,
                msg: ping("queued"),
            },
        },
    );
    host.request(&cx, session, ping_header(3), info, ping("behind"));
    assert_eq!(calls(), Vec::<String>::new(), "nothing ran out of order");
    assert_eq!(host.services[0].queue.len(), 2);
    assert!(!host.run_queued(&cx, 16), "both ran");
    assert_eq!(calls(), ["ping queued", "ping behind"]);

    // Queue drained: at once again.
    host.request(&cx, session, ping_header(4), info, ping("again"));
    assert_eq!(calls(), ["ping again"]);
}

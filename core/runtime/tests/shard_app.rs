//! A tiny application on real shards: local tasks that finish into messages (`spawn_then`),
//! timers, messages between shards and to itself, a bounded run of queued work, shutdown.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lattice_runtime::config::typed_section;
use lattice_runtime::net::NetConfig;
use lattice_runtime::{RuntimeConfig, Server, ShardApp, ShardCx, ShutdownConfig};
use lattice_wire::Frame;
use lattice_wire::SessionId;

const DEFAULTS: &str = include_str!("../../../deploy/lattice.toml");

#[derive(Debug)]
enum Msg {
    Computed(u32),
    Hop,
    Back,
    Chain(u32),
}

struct App {
    log: Arc<Mutex<Vec<String>>>,
    queued: u32,
}

impl App {
    fn record(&self, cx: &ShardCx<Msg>, what: impl Into<String>) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}:{}", cx.id, what.into()));
    }
}

impl ShardApp for App {
    type Msg = Msg;

    fn on_start(&mut self, cx: &ShardCx<Msg>) {
        if cx.id == 0 {
            cx.spawn_then(
                async {
                    monoio::time::sleep(Duration::from_millis(2)).await;
                    41
                },
                |v| Msg::Computed(v + 1),
            );
            cx.timer_after(Duration::from_millis(5), 9).unwrap();
            cx.send(1, Msg::Hop);
            // A message that queues another: each runs in a later pass, never in a loop.
            cx.send(0, Msg::Chain(3));
            self.queued = 1000;
            cx.notify();
        }
    }

    fn on_frame(&mut self, _: &ShardCx<Msg>, _: SessionId, _: Frame<'_>) {}

    fn on_message(&mut self, cx: &ShardCx<Msg>, msg: Msg) {
        match msg {
            Msg::Computed(v) => self.record(cx, format!("computed {v}")),
            Msg::Hop => cx.send(0, Msg::Back),
            Msg::Back => self.record(cx, "back"),
            Msg::Chain(0) => self.record(cx, "chain done"),
            Msg::Chain(n) => cx.send(cx.id, Msg::Chain(n - 1)),
        }
    }

    fn run_queued(&mut self, cx: &ShardCx<Msg>, budget: usize) -> bool {
        assert!(budget >= 1);
        let n = (budget as u32).min(self.queued);
        self.queued -= n;
        if n > 0 {
            self.record(cx, format!("ran {n}"));
        }
        self.queued > 0
    }

    fn on_timer(&mut self, cx: &ShardCx<Msg>, token: u64) {
        self.record(cx, format!("timer {token}"));
    }
}

#[test]
fn tasks_timers_and_messages_reach_the_app() {
    let table: toml::Table = DEFAULTS.parse().unwrap();
    let mut rt: RuntimeConfig = typed_section(&table, "runtime").unwrap();
    rt.shards = 2;
    rt.pin = false;
    rt.queued_budget = 256;
    if let Ok(d) = std::env::var("LATTICE_RUNTIME__DRIVER") {
        rt.driver = toml::Value::String(d).try_into().unwrap();
    }
    let mut net: NetConfig = typed_section(&table, "net").unwrap();
    net.listen = "127.0.0.1:0".into();
    let shutdown: ShutdownConfig = typed_section(&table, "shutdown").unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    let mut server = Server::start(&rt, &net, &shutdown, move |_| App {
        log: l2.clone(),
        queued: 0,
    })
    .unwrap();
    let want = ["0:computed 42", "0:timer 9", "0:back", "0:chain done"];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = log.lock().unwrap().clone();
        if want.iter().all(|w| got.iter().any(|g| g == w)) {
            // 1000 queued items in passes of at most 256: 256, 256, 256, 232.
            let runs: Vec<&String> = got.iter().filter(|g| g.starts_with("0:ran")).collect();
            assert_eq!(runs, ["0:ran 256", "0:ran 256", "0:ran 256", "0:ran 232"]);
            break;
        }
        assert!(Instant::now() < deadline, "missing events; got {got:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.shutdown();
    server.join().unwrap();
}

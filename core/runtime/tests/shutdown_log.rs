//! The shutdown's log lines come in the order things happen: a shard whose thread is still
//! finishing (its `on_stopped`, the runtime's teardown) is logged as stopped only once it is,
//! so "waiting for shards to stop" never names a shard after its "shard stopped" line.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lattice_runtime::config::typed_section;
use lattice_runtime::net::NetConfig;
use lattice_runtime::{RuntimeConfig, Server, ShardApp, ShardCx, ShutdownConfig};
use lattice_wire::{Frame, SessionId};

const DEFAULTS: &str = include_str!("../../../deploy/lattice.toml");

/// `join_within` logs the shards it still waits for every 5 s: shard 0's `on_stopped` outlasts
/// that period.
const SLOW_STOP: Duration = Duration::from_secs(7);

struct App;

impl ShardApp for App {
    type Msg = ();

    fn on_frame(&mut self, _: &ShardCx<()>, _: SessionId, _: Frame<'_>) {}

    fn on_message(&mut self, _: &ShardCx<()>, _: ()) {}

    fn on_stopped(&mut self, cx: &ShardCx<()>) {
        if cx.id == 0 {
            std::thread::sleep(SLOW_STOP);
        }
    }
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_shard_still_stopping_is_waited_for_before_it_is_logged_stopped() {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let w = Capture(buf.clone());
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || w.clone())
        .init();
    let table: toml::Table = DEFAULTS.parse().unwrap();
    let mut rt: RuntimeConfig = typed_section(&table, "runtime").unwrap();
    rt.shards = 2;
    rt.pin = false;
    if let Ok(d) = std::env::var("LATTICE_RUNTIME__DRIVER") {
        rt.driver = toml::Value::String(d).try_into().unwrap();
    }
    let mut net: NetConfig = typed_section(&table, "net").unwrap();
    net.listen = "127.0.0.1:0".into();
    let shutdown: ShutdownConfig = typed_section(&table, "shutdown").unwrap();
    let mut server = Server::start(&rt, &net, &shutdown, |_| App).unwrap();
    server.shutdown();
    server.join().unwrap();
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}: {text}"))
    };
    let waiting = line_of("shutdown: waiting for shards to stop shards=0 ");
    let stopped = line_of("shutdown: shard stopped shard=0");
    assert!(waiting < stopped, "{text}");
    // Shard 1 stopped at once: it is not named.
    assert!(!text.contains("shards=0,1"), "{text}");
    assert_eq!(text.matches("shutdown: shard stopped").count(), 2, "{text}");
}

//! The control lane gets through when the data rings are full: shard 0 floods shard 1 (a slow
//! consumer) until its ring to shard 1 is full and its backlog grows, and an operator's mass close
//! and session listing still reach shard 1 and are answered at once.

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lattice_runtime::config::typed_section;
use lattice_runtime::control::{CloseSelector, Control, SessionQuery};
use lattice_runtime::net::NetConfig;
use lattice_runtime::{RuntimeConfig, Server, ShardApp, ShardCx, ShutdownConfig};
use lattice_wire::{Frame, SessionId};

const DEFAULTS: &str = include_str!("../../../deploy/lattice.toml");

enum Msg {
    /// Shard 0 to itself: send another wave to shard 1.
    Refill,
    /// The flood: each costs shard 1 some work.
    Data,
}

struct Flood {
    stop: Arc<AtomicBool>,
    /// (client port, session) of every session opened.
    opened: Arc<Mutex<Vec<(u16, SessionId)>>>,
}

impl Flood {
    fn wave(&self, cx: &ShardCx<Msg>) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        // Refusable sends: the backlog stays at `runtime.mesh_backlog_limit`, full but bounded.
        for _ in 0..64 {
            if cx.try_send(1, Msg::Data).is_err() {
                break;
            }
        }
        cx.send(0, Msg::Refill);
    }
}

impl ShardApp for Flood {
    type Msg = Msg;

    fn on_start(&mut self, cx: &ShardCx<Msg>) {
        if cx.id == 0 {
            self.wave(cx);
        }
    }

    fn on_open(&mut self, cx: &ShardCx<Msg>, session: SessionId) {
        let port = cx.session_peer(session).map_or(0, |p| p.port());
        self.opened.lock().unwrap().push((port, session));
    }

    fn on_frame(&mut self, _: &ShardCx<Msg>, _: SessionId, _: Frame<'_>) {}

    fn on_message(&mut self, cx: &ShardCx<Msg>, msg: Msg) {
        match msg {
            Msg::Refill => self.wave(cx),
            Msg::Data => {
                // A slow consumer: the ring from shard 0 stays full.
                let until = Instant::now() + Duration::from_micros(20);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

fn metric(server: &Server, name: &str, shard: usize) -> u64 {
    let text = server.metrics().render();
    let prefix = format!("{name}{{shard=\"{shard}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} of shard {shard} not in\n{text}"))
}

#[test]
fn mass_close_and_listing_pass_full_rings() {
    let table: toml::Table = DEFAULTS.parse().unwrap();
    let mut rt: RuntimeConfig = typed_section(&table, "runtime").unwrap();
    rt.shards = 2;
    rt.pin = false;
    rt.ring_capacity = 2;
    rt.mesh_batch = 1;
    if let Ok(d) = std::env::var("LATTICE_RUNTIME__DRIVER") {
        rt.driver = toml::Value::String(d).try_into().unwrap();
    }
    let mut net: NetConfig = typed_section(&table, "net").unwrap();
    net.listen = "127.0.0.1:0".into();
    let mut shutdown: ShutdownConfig = typed_section(&table, "shutdown").unwrap();
    shutdown.drain_timeout_ms = 500;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(Mutex::new(Vec::new()));
    let (s2, o2) = (stop.clone(), opened.clone());
    let mut server = Server::start(&rt, &net, &shutdown, move |_| Flood {
        stop: s2.clone(),
        opened: o2.clone(),
    })
    .unwrap();
    let clients: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(server.local_addr()).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened.lock().unwrap().len() < 6 {
        assert!(Instant::now() < deadline, "sessions did not open");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The flood is on: shard 0's ring to shard 1 is full and its backlog holds messages.
    while metric(&server, "lattice_mesh_ring_full_total", 0) == 0
        || metric(&server, "lattice_mesh_backlog", 0) == 0
    {
        assert!(Instant::now() < deadline, "the rings never filled");
        std::thread::sleep(Duration::from_millis(5));
    }
    let on_one = opened
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| s.shard() == 1)
        .count();
    assert!(on_one > 0);
    let control = server.control();
    let full_before = metric(&server, "lattice_mesh_ring_full_total", 0);
    let listing = control.ask(&[1], Duration::from_secs(5), |reply| Control::Sessions {
        query: SessionQuery {
            limit: 100,
            ..Default::default()
        },
        reply,
    });
    let (_, answer) = &listing[0];
    assert_eq!(answer.as_ref().unwrap().open, on_one);
    let closed = control.ask(&[1], Duration::from_secs(5), |done| Control::Close {
        which: CloseSelector::All,
        reason: "maintenance".into(),
        done: Some(done),
    });
    assert_eq!(closed[0].1, Ok(on_one), "shard 1 closed its sessions");
    // The data path was still jammed while the commands went through.
    assert!(
        metric(&server, "lattice_mesh_backlog", 0) > 0,
        "rings drained: the test proves nothing"
    );
    assert!(metric(&server, "lattice_mesh_ring_full_total", 0) >= full_before);
    assert!(metric(&server, "lattice_control_commands_total", 1) >= 2);
    // The sessions of shard 1 are gone; those of shard 0 stay.
    for c in &clients {
        let port = c.local_addr().unwrap().port();
        let id = opened
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, id)| *id)
            .expect("every client has a session");
        let mut c = c.try_clone().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(if id.shard() == 1 {
            5000
        } else {
            200
        })))
        .unwrap();
        let mut b = [0u8; 1];
        let r = c.read(&mut b);
        if id.shard() == 1 {
            assert!(
                matches!(r, Ok(0)) || r.is_err() && !is_timeout(&r),
                "{id} closed: {r:?}"
            );
        } else {
            assert!(is_timeout(&r), "{id} untouched: {r:?}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    server.shutdown();
    server.join().unwrap();
}

fn is_timeout(r: &std::io::Result<usize>) -> bool {
    matches!(r, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

//! Node links and routing by role over real `lattice` processes on loopback: a gate without the
//! logic role routes its clients' requests over links to logic nodes (docs/CLUSTER.md).

mod acct;
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acct::{ask, code, login, register};
use common::cluster::*;
use common::seq::SeqClient;
use common::*;
use lattice_proto::{error_code, pb, AnyMessage};

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn gate_routes_requests_to_the_logic_node_and_replies_come_back() {
    // The default icon manifest push (the test harness turns it off): a link is not a client and
    // hears nothing before its LinkWelcome.
    let l = logic("logic-a", &["--icons.push_manifest", "true"]);
    let g = gate("gate-1", &peers(&[("logic-a", l.internal)]), &[]);
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut clients: Vec<Client> = (0..4).map(|_| g.connect()).collect();
    for round in 0..20u32 {
        for (i, c) in clients.iter_mut().enumerate() {
            let p = format!("{i}-{round}").into_bytes();
            assert_eq!(
                ping(c, 100 + round, &p),
                AnyMessage::Pong(pb::Pong { payload: p })
            );
        }
    }
    assert_eq!(pings_handled(&l.node), 80, "the logic node handled them");
    // Without etcd the admin view is the static peers this gate routes by.
    let v = g.admin_ok("GET", "/admin/cluster", "");
    assert_eq!(v["etcd"], false, "{v}");
    assert_eq!(v["node_id"], "gate-1", "{v}");
    assert_eq!(v["generation"], 1, "{v}");
    assert_eq!(v["nodes"][0]["node_id"], "logic-a", "{v}");
    assert_eq!(pings_handled(&g), 0, "the gate handled none itself");
    assert_eq!(link_metric(&g, "lattice_link_sent_total", "logic-a"), 80);
    assert_eq!(
        link_metric(&g, "lattice_link_received_total", "logic-a"),
        80
    );
}

/// Per-session rate limits on a logic node leave its links alone: a link carries many clients'
/// frames, and a frame refused there would have no client to answer.
#[test]
fn session_rate_limits_do_not_apply_to_links() {
    let l = logic(
        "logic-a",
        &[
            "--limits.session_msgs_per_s",
            "5",
            "--limits.session_msgs_burst",
            "5",
        ],
    );
    let g = gate("gate-1", &peers(&[("logic-a", l.internal)]), &[]);
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut c = g.connect();
    for rid in 1..=20u32 {
        c.send(rid, &pb::Ping { payload: vec![1] });
    }
    for rid in 1..=20u32 {
        let f = c.recv();
        assert_eq!(f.request_id, rid);
        assert!(
            matches!(f.decode(), AnyMessage::Pong(_)),
            "{:?}",
            f.decode()
        );
    }
    assert_eq!(l.node.metric_total("lattice_rate_limited_msgs_total"), 0);
}

/// A node answering at a peer's address under another name is refused on every attempt: the
/// session its first attempt got is not resumed past the name check.
#[test]
fn a_link_to_a_node_with_another_name_never_comes_up() {
    let l = logic("logic-b", &[]);
    let g = gate("gate-1", &peers(&[("logic-a", l.internal)]), &[]);
    let refusal = r#"is node "logic-b", configured as "logic-a""#;
    wait_until("three refused attempts", || {
        link_metric(&g, "lattice_link_attempt_failures_total", "logic-a") >= 3
    });
    // Logged at WARN with its reason, once per 10 s however often it is retried.
    assert_eq!(g.logs().matches(refusal).count(), 1, "{}", g.logs());
    assert!(!g.logs().contains("link up"), "{}", g.logs());
    assert_eq!(link_metric(&g, "lattice_link_up", "logic-a"), 0);
}

/// With `cluster.link_secret` set, a logic node takes only links that bring the same secret: a
/// `LinkHello` without it or with another is refused and its connection closed (counted), so a
/// peer that reaches the internal listener cannot take a gate's name; a gate with the secret
/// links as before, and one with another secret never comes up.
#[test]
fn a_logic_node_with_a_link_secret_refuses_links_without_it() {
    let secret = "0123456789abcdef-shared";
    let l = logic("logic-a", &["--cluster.link_secret", secret]);
    let g = gate(
        "gate-1",
        &peers(&[("logic-a", l.internal)]),
        &["--cluster.link_secret", secret],
    );
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut c = g.connect();
    assert!(matches!(ping(&mut c, 1, b"through"), AnyMessage::Pong(_)));
    for (i, bad) in ["", "0123456789abcdef-sharee", "0123456789abcdef-shared-"]
        .into_iter()
        .enumerate()
    {
        let mut s = SeqClient::connect(l.internal);
        s.send(
            6,
            &pb::LinkHello {
                node_id: "gate-1".into(),
                secret: bad.into(),
            },
        );
        let f = s.recv().expect("an answer before the close");
        assert_eq!(
            expect_error(&f, error_code::NOT_ALLOWED).message,
            "wrong cluster.link_secret"
        );
        assert!(s.recv().is_none(), "closed after the refusal");
        assert_eq!(
            l.node.metric_total("lattice_link_secret_refused_total"),
            i as u64 + 1
        );
    }
    // The real gate's link was not replaced by the refused ones.
    assert!(matches!(ping(&mut c, 2, b"still"), AnyMessage::Pong(_)));
    assert!(
        !l.node.logs().contains("link session replaced"),
        "{}",
        l.node.logs()
    );
    // The refusal names the peer's address as a plain value (not `Some(…)`).
    let logs = l.node.logs();
    let refused = logs
        .lines()
        .find(|l| l.contains("link refused: wrong cluster.link_secret"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(refused.contains("addr=127.0.0.1:"), "{refused}");
    let g2 = gate(
        "gate-2",
        &peers(&[("logic-a", l.internal)]),
        &["--cluster.link_secret", "another-secret-0123"],
    );
    wait_until("refused attempts", || {
        link_metric(&g2, "lattice_link_attempt_failures_total", "logic-a") >= 2
    });
    assert_eq!(link_metric(&g2, "lattice_link_up", "logic-a"), 0);
    // The gate's reason gives the refusal's code name and message, not a Rust struct dump.
    assert!(
        g2.logs()
            .contains("expected LinkWelcome, got Error NOT_ALLOWED: wrong cluster.link_secret"),
        "{}",
        g2.logs()
    );
}

/// Two gates under one name (static peers: nothing checks names) keep replacing each other's
/// link on the logic node; the node says so at `WARN` naming the key.
#[test]
fn two_gates_under_one_name_are_reported() {
    let l = logic("logic-a", &[]);
    let g1 = gate("gate-1", &peers(&[("logic-a", l.internal)]), &[]);
    wait_until("first link up", || {
        link_metric(&g1, "lattice_link_up", "logic-a") == 1
    });
    let _g2 = gate("gate-1", &peers(&[("logic-a", l.internal)]), &[]);
    l.node
        .wait_log("link session replaced while still connected: two nodes may share the name cluster.node_id = gate-1");
}

#[test]
fn link_messages_are_refused_from_client_sessions_and_before_link_hello() {
    let l = logic("logic-a", &[]);
    // From a client session: no_client opcodes are refused by the gate.
    let mut c = l.node.connect();
    c.send(
        3,
        &pb::LinkHello {
            node_id: "intruder".into(),
            ..Default::default()
        },
    );
    let f = c.recv();
    assert_eq!(expect_error(&f, error_code::NOT_ALLOWED).opcode, 1001);
    // On the internal listener without resume: refused (a link must resume).
    let mut plain = Client::connect(l.internal);
    plain.send(
        4,
        &pb::LinkHello {
            node_id: "gate-x".into(),
            ..Default::default()
        },
    );
    let e = expect_error(&plain.recv(), error_code::NOT_ALLOWED);
    assert!(e.message.contains("resume"), "{e:?}");
    // A request before LinkHello: refused, nothing handled.
    let mut s = SeqClient::connect(l.internal);
    s.send(
        5,
        &pb::LinkRequest {
            origin: 1,
            request_id: 9,
            opcode: 4,
            body: vec![],
            peer: String::new(),
        },
    );
    let f = s.recv().unwrap();
    assert_eq!(
        expect_error(&f, error_code::NOT_ALLOWED).message,
        "send LinkHello first"
    );
    // After LinkHello: a server-internal opcode inside a LinkRequest is refused too.
    s.send(
        6,
        &pb::LinkHello {
            node_id: "gate-x".into(),
            ..Default::default()
        },
    );
    let w = s.recv().unwrap();
    assert_eq!(
        w.decode(),
        AnyMessage::LinkWelcome(pb::LinkWelcome {
            node_id: "logic-a".into()
        })
    );
    s.send(
        7,
        &pb::LinkRequest {
            origin: 1,
            request_id: 9,
            opcode: 1001,
            body: vec![],
            peer: String::new(),
        },
    );
    let f = s.recv().unwrap();
    assert_eq!(
        expect_error(&f, error_code::NOT_ALLOWED).message,
        "not a client request"
    );
    // A malformed inner body: BAD_REQUEST back to the origin, as LinkDeliver.
    s.send(
        8,
        &pb::LinkRequest {
            origin: 42,
            request_id: 11,
            opcode: 4,
            body: vec![0xff, 0xff, 0xff],
            peer: String::new(),
        },
    );
    let f = s.recv().unwrap();
    let AnyMessage::LinkDeliver(d) = f.decode() else {
        panic!("{f:?}")
    };
    assert_eq!(d.origin, 42);
    let mut buf = d.frame.clone();
    let inner = take_frame(&mut buf).unwrap();
    assert_eq!(inner.request_id, 11);
    expect_error(&inner, error_code::BAD_REQUEST);
    assert_eq!(pings_handled(&l.node), 0);
    // A second LinkHello on the session is refused.
    s.send(
        9,
        &pb::LinkHello {
            node_id: "gate-x".into(),
            ..Default::default()
        },
    );
    let f = s.recv().unwrap();
    assert_eq!(
        expect_error(&f, error_code::NOT_ALLOWED).message,
        "LinkHello was sent on this session already"
    );
}

#[test]
fn chat_rooms_span_gates() {
    let l = logic("logic-a", &[]);
    let p = peers(&[("logic-a", l.internal)]);
    let g1 = gate("gate-1", &p, &[]);
    let g2 = gate("gate-2", &p, &[]);
    for g in [&g1, &g2] {
        wait_until("link up", || {
            link_metric(g, "lattice_link_up", "logic-a") == 1
        });
    }
    let mut a = g1.connect();
    let mut b = g2.connect();
    for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
        c.send(
            20 + i as u32,
            &pb::JoinRoom {
                room: "lobby".into(),
            },
        );
        let f = c.recv();
        assert!(matches!(f.decode(), AnyMessage::Joined(_)), "{f:?}");
    }
    a.send(
        30,
        &pb::Say {
            room: "lobby".into(),
            text: "hello from gate 1".into(),
        },
    );
    // Both members get Said: a on gate-1, b on gate-2 (and a's Say its own answer, if any).
    let said_b = b.recv();
    let AnyMessage::Said(s) = said_b.decode() else {
        panic!("{said_b:?}")
    };
    assert_eq!(s.text, "hello from gate 1");
    let mut got_a = false;
    for _ in 0..2 {
        let f = a.recv();
        if let AnyMessage::Said(s) = f.decode() {
            assert_eq!(s.text, "hello from gate 1");
            got_a = true;
            break;
        }
    }
    assert!(got_a, "the sender's gate got the broadcast too");
    // b leaves (its socket closes): the logic node drops its proxy from the room; a's next Say
    // still reaches a.
    drop(b);
    wait_until("proxy closed on the logic node", || {
        a.send(
            31,
            &pb::Say {
                room: "lobby".into(),
                text: "still here".into(),
            },
        );
        loop {
            let f = a.recv();
            if matches!(f.decode(), AnyMessage::Said(_)) {
                return true;
            }
        }
    });
}

/// A TCP relay the test can cut: every connection through it is severed by `cut()`.
struct Relay {
    port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Connections numbered below this swallow what they read (a black hole: nothing closes).
    frozen_below: Arc<AtomicU64>,
    opened: Arc<AtomicU64>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let ln = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = ln.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, b2, s2) = (conns.clone(), bytes.clone(), stop.clone());
        let frozen_below = Arc::new(AtomicU64::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let (f2, o2) = (frozen_below.clone(), opened.clone());
        std::thread::spawn(move || {
            for inbound in ln.incoming() {
                if s2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(inbound) = inbound else { continue };
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let id = o2.fetch_add(1, Ordering::Relaxed);
                let mut g = c2.lock().unwrap();
                g.push(inbound.try_clone().unwrap());
                g.push(outbound.try_clone().unwrap());
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    let b = b2.clone();
                    let frozen = f2.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(_) if id < frozen.load(Ordering::Relaxed) => {}
                                Ok(n) => {
                                    b.fetch_add(n as u64, Ordering::Relaxed);
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay {
            port,
            conns,
            bytes,
            stop,
            frozen_below,
            opened,
        }
    }

    /// Every connection open now stops carrying bytes, without closing; new ones work.
    fn freeze(&self) {
        self.frozen_below
            .store(self.opened.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn a_cut_link_resumes_and_loses_nothing() {
    let l = logic("logic-a", &[]);
    let relay = Relay::start(l.internal);
    let g = gate(
        "gate-1",
        &peers(&[("logic-a", relay.port)]),
        &["--cluster.link_down_grace_ms", "20000"],
    );
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut clients: Vec<Client> = (0..4).map(|_| g.connect()).collect();
    let total = 400u32;
    // Requests go out in bursts with a cut in the middle of each: some are in flight, some queued
    // in the link, some acknowledged; every one must be answered once, in order per client.
    let mut answered = 0u32;
    for burst in 0..4u32 {
        for k in 0..(total / 4 / 4) {
            for (i, c) in clients.iter_mut().enumerate() {
                let rid = burst * 1000 + k * 4 + i as u32 + 1;
                c.send(
                    rid,
                    &pb::Ping {
                        payload: rid.to_be_bytes().to_vec(),
                    },
                );
            }
            if k == 10 {
                relay.cut();
            }
        }
        for (i, c) in clients.iter_mut().enumerate() {
            for k in 0..(total / 4 / 4) {
                let rid = burst * 1000 + k * 4 + i as u32 + 1;
                let f = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.recv())) {
                    Ok(f) => f,
                    Err(_) => panic!(
                        "no answer to {rid}\nGATE:\n{}\nLOGIC:\n{}",
                        g.logs(),
                        l.node.logs()
                    ),
                };
                assert_eq!(f.request_id, rid, "answers in order, none lost or doubled");
                assert_eq!(
                    f.decode(),
                    AnyMessage::Pong(pb::Pong {
                        payload: rid.to_be_bytes().to_vec()
                    })
                );
                answered += 1;
            }
        }
    }
    assert_eq!(answered, total);
    assert_eq!(
        pings_handled(&l.node),
        u64::from(total),
        "each handled once"
    );
    assert!(link_metric(&g, "lattice_link_connects_total", "logic-a") >= 5);
    assert_eq!(link_metric(&g, "lattice_link_failed_total", "logic-a"), 0);
    assert!(relay.bytes.load(Ordering::Relaxed) > 0);
}

#[test]
fn requests_spread_over_logic_nodes_and_a_dead_node_leaves_routing() {
    let a = logic("logic-a", &[]);
    let mut b = logic("logic-b", &[]);
    let g = gate(
        "gate-1",
        &peers(&[("logic-a", a.internal), ("logic-b", b.internal)]),
        &["--cluster.link_down_grace_ms", "1000"],
    );
    for n in [&a, &b] {
        wait_until("links up", || {
            link_metric(&g, "lattice_link_up", &n.name) == 1
        });
    }
    let mut clients: Vec<Client> = (0..16).map(|_| g.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert!(matches!(ping(c, i as u32 + 1, b"x"), AnyMessage::Pong(_)));
    }
    let (ha, hb) = (pings_handled(&a.node), pings_handled(&b.node));
    assert_eq!(ha + hb, 16);
    assert!(
        ha > 0 && hb > 0,
        "both logic nodes own sessions: a={ha} b={hb}"
    );
    // kill -9 of logic-b: its sessions get NODE_UNAVAILABLE (within the grace, once it passed)
    // or a Pong from logic-a; once the gate took b out, every request is served by a.
    unsafe_free_kill(b.node.child.id(), "KILL");
    let _ = b.node.child.wait();
    wait_until("logic-b out of routing", || {
        link_metric(&g, "lattice_link_dead", "logic-b") == 1
    });
    for (i, c) in clients.iter_mut().enumerate() {
        let m = ping(c, 100 + i as u32, b"y");
        assert!(matches!(m, AnyMessage::Pong(_)), "after b left: {m:?}");
    }
    assert_eq!(
        pings_handled(&a.node),
        ha + 16,
        "the survivor served them all"
    );
}

fn metric(l: &Lattice, name: &str) -> u64 {
    l.metric_total(name)
}

#[test]
fn accounts_through_a_gate_live_on_both_logic_nodes() {
    let a = logic("logic-a", &[]);
    let b = logic("logic-b", &[]);
    let g = gate(
        "gate-1",
        &peers(&[("logic-a", a.internal), ("logic-b", b.internal)]),
        &[],
    );
    for n in [&a, &b] {
        wait_until("links up", || {
            link_metric(&g, "lattice_link_up", &n.name) == 1
        });
    }
    let mut tokens = Vec::new();
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut c = g.connect();
        let name = format!("Player_{i}");
        assert!(
            matches!(
                ask(&mut c, 1, &register(&name, "correct horse", "P")),
                AnyMessage::RegisterOk(_)
            ),
            "register {name}"
        );
        // Login is routed by the account (not the session): it finds the rows Register wrote.
        let ok = match ask(&mut c, 2, &login(&name.to_uppercase(), "correct horse")) {
            AnyMessage::LoginOk(ok) => ok,
            other => panic!("login {name}: {other:?}"),
        };
        // The session's later requests follow it to the same node.
        let nick = pb::ChangeNickname {
            nickname: format!("Nick{i}"),
        };
        match ask(&mut c, 3, &nick) {
            AnyMessage::NicknameChanged(n) => assert_eq!(n.nickname, format!("Nick{i}")),
            other => panic!("{other:?}"),
        }
        tokens.push(ok.session_token);
        clients.push(c);
    }
    let (la, lb) = (
        metric(&a.node, "lattice_account_logins_total"),
        metric(&b.node, "lattice_account_logins_total"),
    );
    assert_eq!(la + lb, 8);
    assert!(
        la > 0 && lb > 0,
        "logins on both logic nodes: a={la} b={lb}"
    );
    // A token login from another connection kicks the first: Kicked, then its gate closes it.
    let mut again = g.connect();
    assert!(matches!(
        ask(
            &mut again,
            1,
            &pb::TokenLogin {
                session_token: tokens[0].clone()
            }
        ),
        AnyMessage::LoginOk(_)
    ));
    let kicked = clients[0].recv();
    match kicked.decode() {
        AnyMessage::Kicked(k) => assert_eq!(k.code, error_code::LOGGED_IN_ELSEWHERE),
        other => panic!("expected Kicked, got {other:?}"),
    }
    assert!(clients[0].closed_by_server());
    // Wrong credentials are answered by the owner node like on one server.
    let mut c = g.connect();
    assert_eq!(
        code(&ask(&mut c, 1, &login("player_1", "wrong horse"))),
        error_code::WRONG_CREDENTIALS
    );
}

#[test]
fn a_silent_peer_is_dropped_and_the_link_resumes_through_a_new_socket() {
    let l = logic("logic-a", &[]);
    let relay = Relay::start(l.internal);
    let g = gate(
        "gate-1",
        &peers(&[("logic-a", relay.port)]),
        &[
            "--cluster.link_keepalive_ms",
            "100",
            "--cluster.link_timeout_ms",
            "500",
            "--cluster.link_down_grace_ms",
            "20000",
        ],
    );
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut c = g.connect();
    assert!(matches!(ping(&mut c, 1, b"before"), AnyMessage::Pong(_)));
    // The socket goes silent both ways (nothing closes it): requests sent now are answered once
    // the link noticed the silence and resumed on a new socket.
    relay.freeze();
    for rid in 2..12u32 {
        c.send(
            rid,
            &pb::Ping {
                payload: rid.to_be_bytes().to_vec(),
            },
        );
    }
    for rid in 2..12u32 {
        let f = c.recv();
        assert_eq!(f.request_id, rid);
        assert_eq!(
            f.decode(),
            AnyMessage::Pong(pb::Pong {
                payload: rid.to_be_bytes().to_vec()
            })
        );
    }
    assert!(link_metric(&g, "lattice_link_connects_total", "logic-a") >= 2);
    assert_eq!(link_metric(&g, "lattice_link_failed_total", "logic-a"), 0);
    assert!(
        g.logs().contains("nothing heard from the peer"),
        "{}",
        g.logs()
    );
}

#[test]
fn requests_a_dead_node_held_are_answered_node_unavailable() {
    // Every Ping spins 3 s on the logic node: the one sent is in flight when the node dies.
    let mut l = logic("logic-a", &["--echo.fault_spin_us", "3000000"]);
    let g = gate(
        "gate-1",
        &peers(&[("logic-a", l.internal)]),
        &["--cluster.link_down_grace_ms", "500"],
    );
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut c = g.connect();
    c.send(
        7,
        &pb::Ping {
            payload: b"held".to_vec(),
        },
    );
    wait_until("the Ping reached the logic node", || {
        link_metric(&g, "lattice_link_sent_total", "logic-a") == 1
    });
    unsafe_free_kill(l.node.child.id(), "KILL");
    let _ = l.node.child.wait();
    let f = c.recv();
    assert_eq!(f.request_id, 7);
    let e = expect_error(&f, error_code::NODE_UNAVAILABLE);
    assert_eq!(e.opcode, 4);
    assert_eq!(link_metric(&g, "lattice_link_dead", "logic-a"), 1);
    // No logic node left: answered at once.
    let m = ping(&mut c, 8, b"none");
    assert!(
        matches!(m, AnyMessage::Error(ref e) if e.code == error_code::NODE_UNAVAILABLE),
        "{m:?}"
    );
    assert!(link_metric(&g, "lattice_link_failed_total", "logic-a") >= 1);
}

/// A frozen logic node (SIGSTOP) still accepts connections but never answers: the gate's
/// reconnect attempts are cut to what is left of the grace, so a request waits for the link
/// timeout plus the grace, not for a whole `link_connect_timeout_ms` (60 s here) beyond it.
#[test]
fn a_frozen_node_is_given_up_within_the_grace_not_a_connect_timeout_later() {
    let mut l = logic("logic-a", &[]);
    let g = gate(
        "gate-1",
        &peers(&[("logic-a", l.internal)]),
        &[
            "--cluster.link_keepalive_ms",
            "200",
            "--cluster.link_timeout_ms",
            "600",
            "--cluster.link_down_grace_ms",
            "1000",
            "--cluster.link_connect_timeout_ms",
            "60000",
        ],
    );
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut c = g.connect();
    assert!(matches!(ping(&mut c, 1, b"up"), AnyMessage::Pong(_)));
    unsafe_free_kill(l.node.child.id(), "STOP");
    c.send(
        2,
        &pb::Ping {
            payload: b"frozen".to_vec(),
        },
    );
    // The client's read timeout (10 s) is far below the connect timeout: without the cut, the
    // answer would come only after an attempt of 60 s.
    let f = c.recv();
    assert_eq!(f.request_id, 2);
    expect_error(&f, error_code::NODE_UNAVAILABLE);
    assert_eq!(link_metric(&g, "lattice_link_dead", "logic-a"), 1);
    unsafe_free_kill(l.node.child.id(), "CONT");
    let _ = &mut l;
}

/// A gate stopping (SIGTERM) waits for the answers of requests it sent to a logic node before
/// it closes its clients' sessions, the last one included: the link holds each answer 50 ms
/// between handing it to the shard and forgetting its request (a fault hook), and the shard still
/// sees it in one place or the other. A CI run lost five Pongs when the request was forgotten
/// first and the shard's inbox was not looked at.
#[test]
fn a_stopping_gate_waits_for_the_replies_it_is_owed() {
    // Each Ping spins 100 ms on the logic node: six take 0.6 s.
    let l = logic("logic-a", &["--echo.fault_spin_us", "100000"]);
    let mut g = gate_env(
        "gate-1",
        &peers(&[("logic-a", l.internal)]),
        &[("LATTICE_FAULT_LINK_ANSWER_DELAY_MS", "50")],
        &[],
    );
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut c = g.connect();
    for rid in 1..=6u32 {
        c.send(rid, &pb::Ping { payload: vec![3] });
    }
    wait_until("the Pings went over the link", || {
        link_metric(&g, "lattice_link_sent_total", "logic-a") == 6
    });
    unsafe_free_kill(g.child.id(), "TERM");
    let mut ids = Vec::new();
    while let Some(f) = c.try_recv() {
        assert!(
            matches!(f.decode(), AnyMessage::Pong(_)),
            "{:?}",
            f.decode()
        );
        ids.push(f.request_id);
    }
    assert_eq!(ids, (1..=6).collect::<Vec<_>>(), "{}", g.logs());
    assert_eq!(g.terminate(), 0, "{}", g.logs());
    assert!(!g.logs().contains("drain timeout"), "{}", g.logs());
}

fn join_members(c: &mut Client, rid: u32, room: &str) -> u32 {
    c.send(rid, &pb::JoinRoom { room: room.into() });
    let f = c.recv();
    match f.decode() {
        AnyMessage::Joined(j) => j.members,
        other => panic!("{other:?}"),
    }
}

/// A gate that stops (SIGTERM) ends its clients' proxies on the logic node at once (their rooms
/// lose them), and a gate that comes back with a new link session ends the old one's proxies:
/// neither waits for the logic node's resume window (2 minutes here).
#[test]
fn proxies_of_a_stopped_or_replaced_link_leave_their_rooms_at_once() {
    let l = logic("logic-a", &["--session.resume_window_ms", "120000"]);
    let p = peers(&[("logic-a", l.internal)]);
    let mut g1 = gate("gate-1", &p, &[]);
    let g2 = gate("gate-2", &p, &[]);
    for g in [&g1, &g2] {
        wait_until("link up", || {
            link_metric(g, "lattice_link_up", "logic-a") == 1
        });
    }
    let mut a = g1.connect();
    assert_eq!(join_members(&mut a, 1, "stay"), 1);
    assert_eq!(g1.terminate(), 0, "{}", g1.logs());
    wait_until("the stopped gate's client left the room", || {
        let mut b = g2.connect();
        join_members(&mut b, 2, "stay") == 1
    });
    // gate-2's link is cut for good (its process killed); a new gate-2 opens a new session.
    let mut c = g2.connect();
    assert_eq!(join_members(&mut c, 3, "kept"), 1);
    let mut g2 = g2;
    unsafe_free_kill(g2.child.id(), "KILL");
    let _ = g2.child.wait();
    let g2b = gate("gate-2", &p, &[]);
    wait_until("new link up", || {
        link_metric(&g2b, "lattice_link_up", "logic-a") == 1
    });
    wait_until("the old link's client left the room", || {
        let mut d = g2b.connect();
        join_members(&mut d, 4, "kept") == 1
    });
    assert!(l
        .node
        .logs()
        .contains("link session replaced by a newer one of the same node"));
}

/// logic-a behind a [`Relay`], and gate-1 linked to it through the relay with `bounds` and link
/// timings short enough for a frozen relay to be noticed (keep-alive 1 s, timeout 3 s) but a
/// grace long enough (20 s) that the link resumes rather than being given up; the link is up.
fn relayed_gate(bounds: &[&str]) -> (Logic, Relay, Lattice) {
    let l = logic("logic-a", &[]);
    let relay = Relay::start(l.internal);
    let mut args = bounds.to_vec();
    args.extend_from_slice(&[
        "--cluster.link_keepalive_ms",
        "1000",
        "--cluster.link_timeout_ms",
        "3000",
        "--cluster.link_down_grace_ms",
        "20000",
    ]);
    let g = gate("gate-1", &peers(&[("logic-a", relay.port)]), &args);
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    (l, relay, g)
}

#[test]
fn a_full_link_answers_busy_and_loses_nothing_it_took() {
    let (_l, relay, g) = relayed_gate(&[
        "--cluster.link_queue_frames",
        "4",
        "--cluster.link_unacked_frames",
        "2",
    ]);
    let mut c = g.connect();
    assert!(matches!(ping(&mut c, 1, b"before"), AnyMessage::Pong(_)));
    // The link goes silent: two requests fill its unacknowledged bound, four its queue, the rest
    // are answered BUSY at once. Once the link drops the silent socket and resumes, every request
    // it took is answered.
    relay.freeze();
    for rid in 10..30u32 {
        c.send(
            rid,
            &pb::Ping {
                payload: vec![rid as u8],
            },
        );
    }
    let (mut pongs, mut busy) = (Vec::new(), Vec::new());
    while pongs.len() + busy.len() < 20 {
        let f = c.recv();
        match f.decode() {
            AnyMessage::Pong(_) => pongs.push(f.request_id),
            AnyMessage::Error(e) if e.code == error_code::BUSY => busy.push(f.request_id),
            other => panic!("{other:?}"),
        }
    }
    let mut all: Vec<u32> = pongs.iter().chain(busy.iter()).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (10..30).collect::<Vec<_>>(), "one answer each");
    assert!(
        !busy.is_empty() && !pongs.is_empty(),
        "pongs {pongs:?} busy {busy:?}"
    );
    assert!(
        pongs.windows(2).all(|w| w[0] < w[1]),
        "taken in order: {pongs:?}"
    );
    assert_eq!(
        link_metric(&g, "lattice_link_queue_full_total", "logic-a"),
        busy.len() as u64
    );
}

/// A gate bounds the requests one link carries that wait for their answers
/// (`cluster.link_max_unanswered`, queued or sent): past it a request is answered `BUSY` naming
/// the key, counted, and never queued; the ones taken are all answered once the peer answers.
#[test]
fn a_link_bounds_its_unanswered_requests() {
    let (_l, relay, g) = relayed_gate(&["--cluster.link_max_unanswered", "3"]);
    let mut c = g.connect();
    assert!(matches!(ping(&mut c, 1, b"before"), AnyMessage::Pong(_)));
    relay.freeze();
    for rid in 10..20u32 {
        c.send(
            rid,
            &pb::Ping {
                payload: vec![rid as u8],
            },
        );
    }
    // Refusals come at once; the three taken wait for the relay.
    let mut busy = Vec::new();
    while busy.len() < 7 {
        let f = c.recv();
        match f.decode() {
            AnyMessage::Error(e) if e.code == error_code::BUSY => {
                assert!(e.message.contains("cluster.link_max_unanswered"), "{e:?}");
                busy.push(f.request_id);
            }
            other => panic!("before the link resumed: {other:?}"),
        }
    }
    assert_eq!(busy, (13..20).collect::<Vec<_>>());
    // The link hears nothing past cluster.link_timeout_ms, reconnects (a new relay connection
    // carries bytes) and resends the three.
    let mut pongs = Vec::new();
    while pongs.len() < 3 {
        let f = c.recv();
        match f.decode() {
            AnyMessage::Pong(_) => pongs.push(f.request_id),
            other => panic!("after the link resumed: {other:?}"),
        }
    }
    assert_eq!(pongs, vec![10, 11, 12]);
    assert_eq!(
        link_metric(&g, "lattice_link_unanswered_full_total", "logic-a"),
        7
    );
    assert_eq!(
        link_metric(&g, "lattice_link_queue_full_total", "logic-a"),
        0
    );
    // Answered requests no longer count: the link takes requests again.
    assert!(matches!(ping(&mut c, 30, b"after"), AnyMessage::Pong(_)));
}

/// A client that closes while its requests still wait in the gate's queue to a logic node leaves
/// nothing behind on the logic node: its queued requests are not sent after the close notice
/// (they would make the logic node a proxy session that nothing ends).
#[test]
fn requests_queued_behind_a_closed_session_are_not_sent() {
    let (l, relay, g) = relayed_gate(&["--cluster.link_unacked_frames", "1"]);
    let mut c = g.connect();
    assert!(matches!(ping(&mut c, 1, b"before"), AnyMessage::Pong(_)));
    assert_eq!(l.node.metric_total("lattice_link_proxies"), 1);
    // The link goes silent with one frame unacknowledged at most: the rest wait in the queue.
    relay.freeze();
    for rid in 10..15u32 {
        c.send(rid, &pb::Ping { payload: vec![1] });
    }
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    // The link drops the silent socket, reconnects and resends what was unacknowledged (the close
    // notice among it); the logic node ends the client's proxy and makes no other.
    wait_until("the link resumed", || {
        link_metric(&g, "lattice_link_connects_total", "logic-a") >= 2
            && link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    wait_until("the proxy ended", || {
        l.node.metric_total("lattice_link_proxies") == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        l.node.metric_total("lattice_link_proxies"),
        0,
        "none made after the close"
    );
}

/// What a gate reads from a node it links to is bounded like a client's frames: a frame header
/// past `net.max_frame` ends the attempt at once (nothing is buffered for it), and a peer that
/// trickles its handshake answer byte by byte is given up after `cluster.link_connect_timeout_ms`
/// for the whole handshake, not per read. A fake "logic node" answers the gate's link.
#[test]
fn a_link_bounds_what_the_peer_sends_and_how_long_its_handshake_takes() {
    let ln = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = ln.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let fake = {
        let (stop, accepted) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            ln.set_nonblocking(true).unwrap();
            let mut held = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let Ok((mut s, _)) = ln.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                s.set_nonblocking(false).unwrap();
                let n = accepted.fetch_add(1, Ordering::AcqRel);
                let mut hello = [0u8; 64];
                let _ = s.read(&mut hello);
                if n == 0 {
                    // A Welcome header claiming 1 GiB, then its first bytes.
                    let mut h = Vec::new();
                    h.extend_from_slice(&(1u32 << 30).to_le_bytes());
                    h.extend_from_slice(&2u16.to_le_bytes());
                    h.extend_from_slice(&0u16.to_le_bytes());
                    h.extend_from_slice(&0u32.to_le_bytes());
                    let _ = s.write_all(&h);
                    let _ = s.write_all(&[0u8; 4096]);
                    held.push(s);
                    // (held open: only the frame bound ends this attempt before its timeout)
                } else {
                    // A Welcome header of 1 000 bytes, then one byte every 100 ms.
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut h = Vec::new();
                        h.extend_from_slice(&1000u32.to_le_bytes());
                        h.extend_from_slice(&2u16.to_le_bytes());
                        h.extend_from_slice(&0u16.to_le_bytes());
                        h.extend_from_slice(&0u32.to_le_bytes());
                        if s.write_all(&h).is_err() {
                            return;
                        }
                        while !stop.load(Ordering::Acquire) && s.write_all(&[0]).is_ok() {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    });
                }
            }
        })
    };
    let g = gate(
        "gate-1",
        &peers(&[("logic-a", port)]),
        &[
            "--cluster.link_connect_timeout_ms",
            "600",
            "--cluster.link_retry_ms",
            "100",
        ],
    );
    // The first attempt fails on the 1 GiB header; each later one 600 ms into its trickle.
    // Without a bound on the handshake as a whole, the second attempt would last the 100 s the
    // trickle takes to finish its frame.
    wait_until("three failed attempts", || {
        link_metric(&g, "lattice_link_attempt_failures_total", "logic-a") >= 3
    });
    assert!(accepted.load(Ordering::Acquire) >= 3);
    assert_eq!(link_metric(&g, "lattice_link_up", "logic-a"), 0);
    // The 1 GiB header was refused as a frame, not waited for.
    g.wait_log("frame length 1073741824 out of range");
    stop.store(true, Ordering::Release);
    fake.join().unwrap();
}

/// A reply as large as a client may receive comes back through a gate: the link's frame that
/// carries it is a little longer than `net.max_frame`, which the link allows for (it was dropped,
/// and the client never got its answer).
#[test]
fn a_reply_of_the_largest_size_comes_back_through_a_gate() {
    let max = "4096";
    let l = logic("logic-a", &["--net.max_frame", max]);
    let g = gate(
        "gate-1",
        &peers(&[("logic-a", l.internal)]),
        &["--net.max_frame", max],
    );
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut c = g.connect();
    // Incompressible: the largest Pong a plain session can be sent (4 096 − 8, the room a
    // resumable session's extension needs, − 12 header − 3 field key and length).
    let noise = common::noise(4081, 0x9e37_79b9);
    let payload = noise[..4073].to_vec();
    assert_eq!(
        ping(&mut c, 7, &payload),
        AnyMessage::Pong(pb::Pong { payload })
    );
    // The largest request a client may send (a 4 096-byte frame) reaches the logic node too:
    // its LinkRequest is longer than net.max_frame, which the logic node's link session reads.
    // (Its Pong would be too large: answered as on one node.) It closed the link, and every
    // request behind it came back NODE_UNAVAILABLE.
    match ping(&mut c, 8, &noise) {
        AnyMessage::Error(e) => {
            assert_eq!(e.code, lattice_proto::error_code::INTERNAL, "{e:?}");
            assert_eq!(e.message, "reply too large");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ping(&mut c, 9, b"still up"),
        AnyMessage::Pong(pb::Pong {
            payload: b"still up".to_vec()
        })
    );
    assert_eq!(link_metric(&g, "lattice_link_connects_total", "logic-a"), 1);
}

/// A logic node's shard holds at most `cluster.link_max_proxies` proxy sessions: a gate's client
/// past it is answered `BUSY` (counted), and a proxy freed by its client's close makes room.
#[test]
fn proxies_past_the_bound_are_answered_busy_and_counted() {
    let l = logic(
        "logic-a",
        &["--runtime.shards", "1", "--cluster.link_max_proxies", "2"],
    );
    let g = gate("gate-1", &peers(&[("logic-a", l.internal)]), &[]);
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut cs: Vec<Client> = (0..3).map(|_| g.connect()).collect();
    for (i, c) in cs.iter_mut().take(2).enumerate() {
        assert!(matches!(ping(c, i as u32 + 1, b"in"), AnyMessage::Pong(_)));
    }
    match ping(&mut cs[2], 3, b"one too many") {
        AnyMessage::Error(e) => {
            assert_eq!(e.code, error_code::BUSY, "{e:?}");
            assert!(e.message.contains("cluster.link_max_proxies"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(l.node.metric_total("lattice_link_proxies_refused_total"), 1);
    assert_eq!(l.node.metric_total("lattice_link_proxies"), 2);
    drop(cs.remove(0));
    wait_until("the closed client's proxy released", || {
        l.node.metric_total("lattice_link_proxies") == 1
    });
    assert!(matches!(ping(&mut cs[1], 4, b"now"), AnyMessage::Pong(_)));
}

/// A broadcast to many clients of one gate crosses the link as one frame per client: the link
/// session's queue (`net.internal_send_buffer_limit`) holds a full `Say` to a hundred of them
/// (with `net.send_buffer_limit` it closed, and every client of the gate left every room).
#[test]
fn a_broadcast_to_a_hundred_clients_of_a_gate_keeps_the_link() {
    // Uncompressed, so the frames keep their size (and the test reads them as they are).
    let l = logic(
        "logic-a",
        &["--runtime.shards", "1", "--compress.threshold", "10000000"],
    );
    let g = gate("gate-1", &peers(&[("logic-a", l.internal)]), &[]);
    wait_until("link up", || {
        link_metric(&g, "lattice_link_up", "logic-a") == 1
    });
    let mut cs: Vec<Client> = (0..100).map(|_| g.connect()).collect();
    for (i, c) in cs.iter_mut().enumerate() {
        assert_eq!(join_members(c, i as u32 + 1, "big"), i as u32 + 1);
    }
    let text = "x".repeat(4096);
    cs[0].send(
        500,
        &pb::Say {
            room: "big".into(),
            text: text.clone(),
        },
    );
    for c in cs.iter_mut() {
        let f = c.recv();
        match f.decode() {
            AnyMessage::Said(s) => assert_eq!(s.text.len(), 4096),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(link_metric(&g, "lattice_link_connects_total", "logic-a"), 1);
}

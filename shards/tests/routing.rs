//! Gate → mesh → logic → back, over a real `lattice` process with 2 shards.

mod common;

use common::*;
use lattice_proto::{pb, AnyMessage};

fn echo_all_routes(route: &str) {
    let l = Lattice::start(&["--echo.route", route]);
    let mut clients: Vec<Client> = (0..4).map(|_| l.connect()).collect();
    // Closed probe connections broadcast SessionClosed over the mesh; count only what pings cause.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before: u64 = per_shard(&l.metrics(), "lattice_mesh_sent_total")
        .iter()
        .sum();
    for round in 0..50u32 {
        for (i, c) in clients.iter_mut().enumerate() {
            let payload = format!("{route}-{i}-{round}").into_bytes();
            c.send(
                round + 10,
                &pb::Ping {
                    payload: payload.clone(),
                },
            );
            let f = c.recv();
            assert_eq!(f.request_id, round + 10);
            assert_eq!(f.decode(), AnyMessage::Pong(pb::Pong { payload }));
        }
    }
    let m = l.metrics();
    let sent: u64 = per_shard(&m, "lattice_mesh_sent_total").iter().sum::<u64>() - before;
    match route {
        // Each request and each reply crosses the mesh.
        "remote" => assert!(sent >= 400, "remote routing must use the mesh, sent={sent}"),
        "local" => assert_eq!(sent, 0, "local routing must not use the mesh"),
        _ => {}
    }
}

#[test]
fn echo_local_route() {
    echo_all_routes("local");
}

#[test]
fn echo_hash_route() {
    echo_all_routes("hash");
}

#[test]
fn echo_remote_route_crosses_the_mesh() {
    echo_all_routes("remote");
}

#[test]
fn chat_broadcast_reaches_members_on_every_shard() {
    let l = Lattice::start(&[]);
    let mut cs: Vec<Client> = (0..4).map(|_| l.connect()).collect();
    let shards: std::collections::HashSet<u64> = cs.iter().map(|c| c.session_id >> 56).collect();
    assert_eq!(shards.len(), 2, "round robin put sessions on both shards");
    for (i, c) in cs.iter_mut().enumerate() {
        c.send(
            1,
            &pb::JoinRoom {
                room: "lobby".into(),
            },
        );
        match c.recv().decode() {
            AnyMessage::Joined(j) => assert_eq!(j.members as usize, i + 1),
            other => panic!("{other:?}"),
        }
    }
    cs[2].send(
        77,
        &pb::Say {
            room: "lobby".into(),
            text: "hello all".into(),
        },
    );
    let from = cs[2].session_id;
    for (i, c) in cs.iter_mut().enumerate() {
        let f = c.recv();
        assert_eq!(f.request_id, if i == 2 { 77 } else { 0 });
        assert_eq!(
            f.decode(),
            AnyMessage::Said(pb::Said {
                room: "lobby".into(),
                from,
                text: "hello all".into()
            })
        );
    }
    // A session that did not join cannot speak; one that left (closed) no longer receives.
    let mut outsider = l.connect();
    outsider.send(
        3,
        &pb::Say {
            room: "lobby".into(),
            text: "x".into(),
        },
    );
    expect_error(&outsider.recv(), lattice_proto::error_code::NOT_MEMBER);
    // Room names are checked the same for Say as for JoinRoom: 1..=64 bytes without control or
    // invisible characters, else BAD_REQUEST.
    let long = "room name empty or too long";
    let chars = "room name has a control or invisible character";
    for (rid, room, why) in [
        (5, String::new(), long),
        (6, "r".repeat(65), long),
        (7, "a\u{0}b".into(), chars),
        (8, "\u{1b}[2J".into(), chars),
        (9, "x\u{200b}".into(), chars),
        (10, "\u{202e}gnp.exe".into(), chars),
        (11, "\u{85}".into(), chars),
        (12, "a\u{200d}b".into(), chars),
    ] {
        for c in [&mut outsider, &mut cs[0]] {
            c.send(
                rid,
                &pb::Say {
                    room: room.clone(),
                    text: "x".into(),
                },
            );
            let f = c.recv();
            assert_eq!(f.request_id, rid);
            let e = expect_error(&f, lattice_proto::error_code::BAD_REQUEST);
            assert_eq!(e.message, why);
            c.send(rid, &pb::JoinRoom { room: room.clone() });
            let f = c.recv();
            assert_eq!(f.request_id, rid);
            let e = expect_error(&f, lattice_proto::error_code::BAD_REQUEST);
            assert_eq!(e.message, why);
        }
    }
    drop(cs.pop());
    std::thread::sleep(std::time::Duration::from_millis(200));
    cs[0].send(
        4,
        &pb::JoinRoom {
            room: "lobby".into(),
        },
    );
    match cs[0].recv().decode() {
        AnyMessage::Joined(j) => assert_eq!(j.members, 3, "closed session left the room"),
        other => panic!("{other:?}"),
    }
}

fn balance(mode: &str) {
    let l = Lattice::start(&["--net.balance", mode]);
    let before = per_shard(&l.metrics(), "lattice_connections_accepted_total");
    let mut conns = Vec::new();
    for _ in 0..1000 {
        conns.push(std::net::TcpStream::connect(("127.0.0.1", l.port)).unwrap());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let counts = loop {
        let c: Vec<u64> = per_shard(&l.metrics(), "lattice_connections_accepted_total")
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect();
        if c.iter().sum::<u64>() >= 1000 || std::time::Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(counts.iter().sum::<u64>(), 1000, "{counts:?}");
    let (a, b) = (counts[0] as f64, counts[1] as f64);
    assert!(
        (a - b).abs() / 1000.0 <= 0.05,
        "per-shard counts {counts:?} differ by more than 5 %"
    );
}

#[test]
fn thousand_connects_round_robin_within_5_percent() {
    balance("round_robin");
}

#[test]
fn thousand_connects_least_conns_within_5_percent() {
    balance("least_conns");
}

/// The chat's bounds answer `BUSY` with their reason and are counted: rooms one session is in per
/// shard, members per room, rooms per shard; a session already in a room joins it again.
#[test]
fn chat_bounds_answer_busy_and_are_counted() {
    let l = Lattice::start(&[
        "--runtime.shards",
        "1",
        "--chat.max_rooms_per_session",
        "3",
        "--chat.max_members",
        "2",
        "--chat.max_rooms_per_shard",
        "5",
    ]);
    let join = |c: &mut Client, rid: u32, room: &str| -> Result<u32, String> {
        c.send(rid, &pb::JoinRoom { room: room.into() });
        let f = c.recv();
        assert_eq!(f.request_id, rid);
        match f.decode() {
            AnyMessage::Joined(j) => Ok(j.members),
            AnyMessage::Error(e) => {
                assert_eq!(e.code, lattice_proto::error_code::BUSY);
                Err(e.message)
            }
            other => panic!("{other:?}"),
        }
    };
    let mut a = l.connect();
    for (i, r) in ["r1", "r2", "r3"].iter().enumerate() {
        assert_eq!(join(&mut a, i as u32 + 1, r), Ok(1));
    }
    assert_eq!(join(&mut a, 4, "r4"), Err("in too many rooms".into()));
    assert_eq!(join(&mut a, 5, "r1"), Ok(1), "a member joins again");
    let mut b = l.connect();
    assert_eq!(join(&mut b, 1, "r1"), Ok(2));
    let mut c = l.connect();
    assert_eq!(join(&mut c, 1, "r1"), Err("room full".into()));
    assert_eq!(join(&mut c, 2, "r4"), Ok(1));
    assert_eq!(join(&mut c, 3, "r5"), Ok(1));
    assert_eq!(join(&mut c, 4, "r6"), Err("too many rooms".into()));
    for (name, want) in [
        ("lattice_chat_session_rooms_full_total", 1),
        ("lattice_chat_room_full_total", 1),
        ("lattice_chat_rooms_full_total", 1),
    ] {
        assert_eq!(l.metric_total(name), want, "{name}");
    }
    // A closed session's rooms are left: its room count no longer holds the others back.
    drop(a);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(join(&mut c, 5, "r1"), Ok(2));
}

/// A session that closes right behind its `JoinRoom` (sent in one write with its `Hello`) is not
/// left in the room: the room's shard queues the join behind its service queue, and the close
/// notice, which arrives after it, takes effect after it.
#[test]
fn a_session_that_closes_behind_its_join_does_not_stay_in_the_room() {
    use std::io::Write;
    let l = Lattice::start(&["--chat.max_members", "1000"]);
    for i in 0..200u32 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", l.port)).unwrap();
        let mut w = encode(
            1,
            &pb::Hello {
                client_version: lattice_proto::version::PROTOCOL.to_string(),
                ..Default::default()
            },
        );
        let room = format!("lobby{}", i % 4);
        w.extend_from_slice(&encode(2, &pb::JoinRoom { room }));
        s.write_all(&w).unwrap();
        drop(s);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while l.metric_total("lattice_sessions_open") > 0 {
        assert!(std::time::Instant::now() < deadline, "sessions still open");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // What is still queued anywhere has run once a request round-trips through each room.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut c = l.connect();
    for i in 0..4u32 {
        c.send(
            10 + i,
            &pb::JoinRoom {
                room: format!("lobby{i}"),
            },
        );
        match c.recv().decode() {
            AnyMessage::Joined(j) => assert_eq!(j.members, 1, "lobby{i} kept closed sessions"),
            other => panic!("{other:?}"),
        }
    }
}

//! What `queue_limit` bounds (docs/PROTOCOL.md, "Flow control"): requests *waiting* in a
//! service's queue. A request handled the moment it is read never waits, so it never counts and
//! never gets `BUSY`; per-session floods are bounded by the rate limits instead.

mod common;

use common::*;
use lattice_proto::{error_code, pb, AnyMessage};

#[test]
fn local_requests_never_wait_so_a_queue_limit_of_one_refuses_none() {
    let l = Lattice::start(&["--echo.route", "local", "--logic.queue_limit", "1"]);
    let mut c = l.connect();
    let n = 1200u32;
    let mut burst = Vec::new();
    for rid in 1..=n {
        burst.extend(encode(
            rid,
            &pb::Ping {
                payload: rid.to_le_bytes().to_vec(),
            },
        ));
    }
    c.send_raw(&burst);
    for rid in 1..=n {
        let f = c.recv();
        assert_eq!(f.request_id, rid, "replies keep request order");
        match f.decode() {
            AnyMessage::Pong(p) => assert_eq!(p.payload, rid.to_le_bytes()),
            other => panic!("request {rid}: {other:?}"),
        }
    }
    assert_eq!(l.metric_total("lattice_dropped_busy_total"), 0);
    assert_eq!(
        l.metric_total("lattice_service_queue_depth"),
        0,
        "nothing ever waited"
    );
}

#[test]
fn the_same_flood_is_bounded_by_the_session_rate_limit() {
    let l = Lattice::start(&[
        "--echo.route",
        "local",
        "--logic.queue_limit",
        "1",
        "--limits.session_msgs_per_s",
        "1",
        "--limits.session_msgs_burst",
        "100",
    ]);
    let mut c = l.connect();
    let mut burst = Vec::new();
    for rid in 1..=1200u32 {
        burst.extend(encode(rid, &pb::Ping { payload: vec![] }));
    }
    c.send_raw(&burst);
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..1200 {
        match c.recv().decode() {
            AnyMessage::Pong(_) => pongs += 1,
            AnyMessage::Error(e) if e.code == error_code::RATE_LIMITED => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    // The Hello took one unit of the burst of 100.
    assert_eq!((pongs, limited), (99, 1101));
}

//! Membership and machine-id leases against a real etcd (Debian `etcd-server` 3.4, installed by
//! deploy/ci/etcd.sh): each test starts its own etcd on free ports with a temporary data dir, and
//! real `lattice` processes or the center's lease store in-process. A missing etcd fails the test
//! saying what to install.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{free_port, unsafe_free_kill, Lattice};
use lattice_server::center::ids::IdGen;
use lattice_server::center::lease::LeaseStore;
use lattice_server::center::{now_ms, Center, CenterConfig};
use lattice_server::cluster::etcd::leases::EtcdLeases;
use lattice_server::cluster::etcd::{membership, EtcdConfig, EtcdError, EtcdStats};
use lattice_server::cluster::members::{Members, NodeInfo, Role};
use lattice_storage::lease::{Acquire, LeaseError};

/// Polls `f` every 50 ms until it is true; fails with `what` after `secs` seconds (a bound, not
/// a timing assertion: every wait here is for something that must happen).
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node ids in a node's `GET /admin/cluster`.
fn view(l: &Lattice) -> Vec<String> {
    let v = l.admin_ok("GET", "/admin/cluster", "");
    assert_eq!(v["etcd"], true, "{v}");
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Starts a node named `name` on `etcd` (TTL 3 s; the view follows the watch).
fn node(etcd: &Etcd, name: &str, extra: &[&str]) -> Lattice {
    node_ttl(etcd, name, "3000", extra)
}

/// [`node`] with a membership TTL of `ttl_ms`.
fn node_ttl(etcd: &Etcd, name: &str, ttl_ms: &str, extra: &[&str]) -> Lattice {
    let endpoints = etcd.endpoints_arg();
    let mut args = vec![
        "--center.node",
        name,
        "--etcd.endpoints",
        &endpoints,
        "--etcd.lease_ttl_ms",
        ttl_ms,
        // No periodic re-read during a test: every change seen comes from the watch (or from the
        // re-read after a watch failed).
        "--etcd.resync_interval_ms",
        "3600000",
        "--etcd.request_timeout_ms",
        "500",
    ];
    args.extend_from_slice(extra);
    Lattice::start(&args)
}

/// Runs `lattice run` expecting it to refuse to start; returns its exit code and stderr.
fn refused(extra: &[&str]) -> (i32, String) {
    let data = std::env::temp_dir().join(format!(
        "lattice-etcd-refused-{}-{}",
        std::process::id(),
        free_port()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args([
            "run",
            "--net.listen",
            &format!("127.0.0.1:{}", free_port()),
            "--admin.listen",
            &format!("127.0.0.1:{}", free_port()),
            "--listeners.http",
            &format!("127.0.0.1:{}", free_port()),
            "--runtime.shards",
            "1",
            "--storage.data_dir",
            &data.display().to_string(),
        ])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run lattice");
    let _ = std::fs::remove_dir_all(&data);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `promtool check metrics` accepts `text` (the etcd families included).
fn promtool_accepts(text: &str) {
    assert!(text.contains("lattice_etcd_requests_total "), "{text}");
    common::promtool_accepts(text);
}

#[test]
fn two_nodes_see_each_other_a_clean_stop_leaves_at_once_a_kill_after_the_ttl() {
    let etcd = Etcd::start();
    let a = node(&etcd, "a", &[]);
    // b's lease is long (8 s: etcd keeps it at least 5 s after its last keep-alive), so that
    // "still registered right after the kill" holds on a slow machine too.
    let mut b = node_ttl(&etcd, "b", "8000", &[]);
    wait_for(10, "a sees a and b", || view(&a) == ids(&["a", "b"]));
    wait_for(10, "b sees a and b", || view(&b) == ids(&["a", "b"]));
    // Two nodes, two machine ids, both leased in etcd.
    let (ma, mb) = (
        a.metric("lattice_center_machine_id"),
        b.metric("lattice_center_machine_id"),
    );
    assert_ne!(ma, mb);
    assert_eq!(etcd.keys("lattice/machine-ids/"), {
        let mut k = vec![
            format!("lattice/machine-ids/{ma}"),
            format!("lattice/machine-ids/{mb}"),
        ];
        k.sort();
        k
    });
    assert_eq!(a.metric("lattice_etcd_registered"), 1);
    assert_eq!(a.metric("lattice_etcd_registrations_total"), 1);
    assert_eq!(a.metric("lattice_etcd_members"), 2);
    assert!(a.metric("lattice_etcd_requests_total") > 0);
    promtool_accepts(&a.metrics());

    // A clean stop revokes the lease before the process exits: the key is gone at its exit.
    let mut c = node(&etcd, "c", &[]);
    wait_for(10, "a sees c", || view(&a) == ids(&["a", "b", "c"]));
    assert_eq!(c.terminate(), 0, "{}", c.logs());
    assert!(
        !etcd
            .keys("lattice/nodes/")
            .contains(&"lattice/nodes/c".to_string()),
        "a cleanly stopped node is deregistered when it exits"
    );
    wait_for(10, "a no longer sees c", || view(&a) == ids(&["a", "b"]));

    // SIGKILL: nothing is revoked; the key stays until the lease (8 s) expires, then goes.
    unsafe_free_kill(b.child.id(), "KILL");
    let _ = b.child.wait();
    assert!(
        etcd.keys("lattice/nodes/")
            .contains(&"lattice/nodes/b".to_string()),
        "a killed node stays registered until its lease expires"
    );
    wait_for(20, "b's lease expires", || {
        !etcd
            .keys("lattice/nodes/")
            .contains(&"lattice/nodes/b".to_string())
    });
    wait_for(10, "a no longer sees b", || view(&a) == ids(&["a"]));
}

#[test]
fn an_etcd_outage_longer_than_the_ttl_then_both_nodes_are_back() {
    let mut etcd = Etcd::start();
    let a = node(&etcd, "a", &[]);
    let b = node(&etcd, "b", &[]);
    wait_for(10, "a sees a and b", || view(&a) == ids(&["a", "b"]));
    wait_for(10, "b sees a and b", || view(&b) == ids(&["a", "b"]));
    etcd.kill();
    // After the kill returned: every renewal that succeeded started before this.
    let killed_at = lattice_server::center::now_ms();
    // Keep-alives fail for longer than the TTL: both nodes know they are not registered, and
    // keep the last view meanwhile.
    wait_for(15, "a marks itself unregistered", || {
        a.metric("lattice_etcd_registered") == 0
    });
    wait_for(15, "b marks itself unregistered", || {
        b.metric("lattice_etcd_registered") == 0
    });
    assert!(a.metric("lattice_etcd_request_failures_total") > 0);
    assert!(a.metric("lattice_etcd_view_failures_total") > 0);
    assert_eq!(view(&a), ids(&["a", "b"]), "the last view is kept");
    // Fencing in the process: renewals fail, and the ids' ceiling stays at the last confirmed
    // reservation, at most center.reserve_ms (2000) past the outage's start: shards stop issuing
    // ids (IDS_UNAVAILABLE) before the machine-id lease (center.lease_ttl_ms, 30000) could pass
    // to another node.
    wait_for(15, "a's renewals fail", || {
        a.metric("lattice_center_lease_renew_failures_total") > 0
    });
    let ceiling_ms = a
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("lattice_center_id_ceiling_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| (s * 1000.0).round() as u64)
        .expect("the ceiling gauge");
    assert!(
        ceiling_ms <= killed_at + 2000 + 1,
        "ceiling {ceiling_ms} past the outage start {killed_at} + reserve"
    );
    assert!(ceiling_ms < killed_at + 30_000);
    etcd.run();
    // Same data dir: both are registered again (under their restored lease or a new one) and
    // see each other.
    wait_for(20, "a registered again", || {
        a.metric("lattice_etcd_registered") == 1
    });
    wait_for(20, "b registered again", || {
        b.metric("lattice_etcd_registered") == 1
    });
    wait_for(20, "a sees both again", || view(&a) == ids(&["a", "b"]));
    wait_for(20, "b sees both again", || view(&b) == ids(&["a", "b"]));
    let mut keys = etcd.keys("lattice/nodes/");
    keys.sort();
    assert_eq!(keys, ids(&["lattice/nodes/a", "lattice/nodes/b"]));
}

#[test]
fn a_node_cut_off_longer_than_its_ttl_registers_again_under_a_new_lease() {
    let etcd = Etcd::start();
    let a = node(&etcd, "a", &[]);
    let b = node(&etcd, "b", &[]);
    wait_for(10, "a sees a and b", || view(&a) == ids(&["a", "b"]));
    // b freezes (no keep-alive) while etcd runs on: its lease expires and it leaves the views.
    unsafe_free_kill(b.child.id(), "STOP");
    wait_for(15, "a stops seeing the frozen b", || {
        view(&a) == ids(&["a"])
    });
    unsafe_free_kill(b.child.id(), "CONT");
    // The classic bug is to stay missing: b must find its lease gone and register again.
    wait_for(15, "b registers again", || {
        b.metric("lattice_etcd_registrations_total") == 2
    });
    assert!(b.metric("lattice_etcd_lease_lost_total") >= 1);
    assert_eq!(b.metric("lattice_etcd_registered"), 1);
    wait_for(10, "a sees b again", || view(&a) == ids(&["a", "b"]));
    wait_for(10, "b sees a and itself", || view(&b) == ids(&["a", "b"]));

    // An operator deletes a's key: a sees itself missing from its view and registers again.
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode("lattice/nodes/a");
    assert!(etcd
        .call("/v3/kv/deleterange", &format!(r#"{{"key":"{key}"}}"#))
        .is_some());
    wait_for(15, "a registers again", || {
        a.metric("lattice_etcd_registrations_total") == 2
    });
    wait_for(10, "b sees a again", || view(&b) == ids(&["a", "b"]));
}

#[test]
fn a_taken_fixed_machine_id_or_node_name_refuses_to_start_with_a_clear_error() {
    let etcd = Etcd::start();
    let a = node(&etcd, "a", &["--center.machine_id", "5"]);
    assert_eq!(a.metric("lattice_center_machine_id"), 5);
    let endpoints = etcd.endpoints_arg();
    let (code, err) = refused(&[
        "--center.node",
        "c",
        "--center.machine_id",
        "5",
        "--etcd.endpoints",
        &endpoints,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("machine id 5 is held by node \"a\""),
        "names the id and its holder: {err}"
    );
    // The refused node registered nothing and took no id.
    assert_eq!(etcd.keys("lattice/nodes/"), ids(&["lattice/nodes/a"]));
    assert_eq!(
        etcd.keys("lattice/machine-ids/"),
        ids(&["lattice/machine-ids/5"])
    );
    assert_eq!(view(&a), ids(&["a"]));

    // A second process under the running node's name is refused (after waiting one TTL for a
    // crashed predecessor to expire) before it touches the ids: a keeps its id.
    let (code, err) = refused(&[
        "--center.node",
        "a",
        "--etcd.endpoints",
        &endpoints,
        "--etcd.lease_ttl_ms",
        "2000",
        "--etcd.request_timeout_ms",
        "500",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("node_id \"a\" is registered in etcd by another live process"),
        "{err}"
    );
    // The wait was not silent: one INFO line when it began, saying how long it lasts at most.
    let waits: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("etcd: this node_id is still registered"))
        .collect();
    assert_eq!(waits.len(), 1, "{err}");
    assert!(
        waits[0].contains("INFO") && waits[0].contains("wait_ms_at_most=3000"),
        "{err}"
    );
    assert_eq!(a.metric("lattice_center_lease_lost"), 0);
    assert_eq!(a.metric("lattice_center_machine_id"), 5);
    assert_eq!(
        etcd.keys("lattice/machine-ids/"),
        ids(&["lattice/machine-ids/5"])
    );
    assert_eq!(view(&a), ids(&["a"]));
}

#[test]
fn bad_etcd_config_or_no_etcd_is_a_start_up_error_naming_the_key() {
    for (k, v, want) in [
        (
            "--etcd.endpoints",
            r#"["127.0.0.1:2379"]"#,
            "`etcd.endpoints`",
        ),
        (
            "--etcd.endpoints",
            r#"["https://e:2379"]"#,
            "`etcd.endpoints`",
        ),
        ("--etcd.lease_ttl_ms", "0", "`etcd.lease_ttl_ms`"),
        (
            "--etcd.request_timeout_ms",
            "0",
            "`etcd.request_timeout_ms`",
        ),
    ] {
        let (code, err) = refused(&[k, v]);
        assert_eq!(code, 2, "{k} {v}: {err}");
        assert!(err.contains(want), "{k} {v}: {err}");
    }
    // With etcd as the discovery: no static peers, and no internal listener on an address that
    // names no host (what is registered is where gates connect).
    let endpoints = format!("[\"http://127.0.0.1:{}\"]", free_port());
    let (code, err) = refused(&[
        "--etcd.endpoints",
        &endpoints,
        "--cluster.static_peers",
        r#"[{ node_id = "l", roles = ["logic"], internal_addr = "127.0.0.1:1" }]"#,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`cluster.static_peers`"), "{err}");
    let listeners = format!(
        r#"[{{ addr = "0.0.0.0:{}", stack = "binary", session = "internal" }}]"#,
        free_port()
    );
    let (code, err) = refused(&[
        "--etcd.endpoints",
        &endpoints,
        "--listeners.extra",
        &listeners,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`listeners.extra`"), "{err}");
    // Nobody listens there: the center cannot lease an id, the node does not start.
    let dead = format!("[\"http://127.0.0.1:{}\"]", free_port());
    let (code, err) = refused(&[
        "--etcd.endpoints",
        &dead,
        "--etcd.request_timeout_ms",
        "300",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("etcd unreachable"), "{err}");
}

fn center_cfg(node: &str, machine_id: i64) -> CenterConfig {
    CenterConfig {
        node: node.into(),
        machine_id,
        lease_ttl_ms: 5000,
        renew_interval_ms: 100,
        reserve_ms: 1000,
        clock_wait_max_ms: 3000,
    }
}

fn etcd_cfg(etcd: &Etcd) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![etcd.url()],
        request_timeout_ms: 500,
        ..EtcdConfig::default()
    }
}

fn store(etcd: &Etcd) -> Box<EtcdLeases> {
    Box::new(EtcdLeases::open(&etcd_cfg(etcd), Arc::new(EtcdStats::default())).unwrap())
}

#[test]
fn machine_ids_are_unique_persist_their_last_timestamp_and_come_back_to_their_node() {
    let etcd = Etcd::start();
    let c1 = Center::start(&center_cfg("n1", -1), store(&etcd), 1, now_ms).unwrap();
    let c2 = Center::start(&center_cfg("n2", -1), store(&etcd), 1, now_ms).unwrap();
    assert_eq!((c1.machine_id(), c2.machine_id()), (0, 1));
    // n1 issues ids, stops cleanly: the id's last timestamp is the exact last one issued.
    let mut g = IdGen::new(c1.lease(), 0, c1.floor_ms());
    let mut last = 0;
    for _ in 0..5 {
        last = g.next(now_ms()).unwrap().unix_ms();
    }
    g.report_stop(0);
    c1.stop();
    assert!(!etcd
        .keys("lattice/machine-ids/")
        .contains(&"lattice/machine-ids/0".into()));
    // n1 again: its id back (though 0 is not the lowest free one any more than before), with
    // every new id above the old ones.
    let c1 = Center::start(&center_cfg("n1", -1), store(&etcd), 1, now_ms).unwrap();
    assert_eq!(c1.machine_id(), 0);
    assert_eq!(c1.floor_ms(), last);
    let mut g = IdGen::new(c1.lease(), 0, c1.floor_ms());
    assert!(g.next(now_ms()).unwrap().unix_ms() > last);
    // A third node gets the next free id; a fixed id held by another node is refused.
    let c3 = Center::start(&center_cfg("n3", -1), store(&etcd), 1, now_ms).unwrap();
    assert_eq!(c3.machine_id(), 2);
    let e = Center::start(&center_cfg("n4", 1), store(&etcd), 1, now_ms)
        .err()
        .expect("id 1 is held by n2");
    assert!(
        e.to_string()
            .contains("machine id 1 is held by node \"n2\""),
        "{e}"
    );
    c1.stop();
    c2.stop();
    c3.stop();
}

#[test]
fn a_crashed_holder_is_replaced_by_its_restart_and_its_reservation_is_kept() {
    let etcd = Etcd::start();
    // A process of n1 takes id 7 and renews (reserving ahead of the clock), then "crashes": its
    // store is dropped without a release.
    let mut s = store(&etcd);
    let now = now_ms();
    let row = s
        .acquire(&Acquire {
            machine_id: Some(7),
            max_id: 127,
            owner: "n1",
            instance: "old",
            now_ms: now,
            ttl_ms: 30_000,
        })
        .unwrap();
    assert_eq!(row.machine_id, 7);
    let reserved = now + 1500;
    s.renew(7, "old", now + 30_000, reserved).unwrap();
    drop(s);
    // Another node may not take it while the lease runs...
    let e = store(&etcd)
        .acquire(&Acquire {
            machine_id: Some(7),
            max_id: 127,
            owner: "n2",
            instance: "x",
            now_ms: now,
            ttl_ms: 30_000,
        })
        .unwrap_err();
    assert!(
        matches!(e, LeaseError::Held { id: 7, ref owner, .. } if owner == "n1"),
        "{e}"
    );
    // ...but n1's restart takes it back, and must wait out the old reservation.
    let c = Center::start(&center_cfg("n1", 7), store(&etcd), 1, now_ms).unwrap();
    assert_eq!(c.machine_id(), 7);
    assert_eq!(c.floor_ms(), reserved);
    c.stop();
}

#[test]
fn with_etcd_gone_ids_stop_before_the_lease_ttl_and_a_lost_lease_stops_them_for_good() {
    let mut etcd = Etcd::start();
    let cfg = center_cfg("n1", -1);
    let c = Center::start(&cfg, store(&etcd), 1, now_ms).unwrap();
    let mut g = IdGen::new(c.lease(), 0, c.floor_ms());
    assert!(g.next(now_ms()).is_ok());
    etcd.kill();
    // After the kill returned: every renewal that succeeded started before this.
    let killed_at = now_ms();
    // Renewals fail from now on; the ceiling stays at the last confirmed reservation, at most
    // reserve_ms past the kill, so ids stop before the lease (lease_ttl_ms) could pass to
    // another node.
    wait_for(15, "ids refused", || g.next(now_ms()).is_err());
    let ceiling = c.lease().ceiling_ms();
    assert!(
        ceiling <= killed_at + cfg.reserve_ms,
        "ceiling {ceiling}, killed at {killed_at}"
    );
    assert!(ceiling < killed_at + cfg.lease_ttl_ms);
    assert!(g.next(ceiling + 1).is_err());
    c.stop();

    // Another process takes the id (here: its key is replaced behind the holder's back): the
    // next renewal finds the key is not ours and ids stop for good, without waiting.
    etcd.run();
    let c = Center::start(&center_cfg("n2", 9), store(&etcd), 1, now_ms).unwrap();
    let mut g = IdGen::new(c.lease(), 0, c.floor_ms());
    assert!(g.next(now_ms()).is_ok());
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD;
    let put = format!(
        r#"{{"key":"{}","value":"{}"}}"#,
        b.encode("lattice/machine-ids/9"),
        b.encode(r#"{"owner":"intruder","instance":"z"}"#)
    );
    assert!(etcd.call("/v3/kv/put", &put).is_some());
    let cached = c.lease().ceiling_ms();
    wait_for(10, "the lease found lost", || c.lease().ceiling_ms() == 0);
    // A shard's generator may finish the reservation it already holds (the ceiling logic reads
    // the lease only past it), never beyond; a generator that asks now gets nothing.
    assert!(g.next(cached + 1).is_err());
    let mut fresh = IdGen::new(c.lease(), 0, c.floor_ms());
    assert!(fresh.next(now_ms()).is_err());
    c.stop();
    // The intruder's key is left alone by the stop (it is not ours).
    let get = format!(r#"{{"key":"{}"}}"#, b.encode("lattice/machine-ids/9"));
    let v = etcd.call("/v3/kv/range", &get).unwrap();
    let value = b.decode(v["kvs"][0]["value"].as_str().unwrap()).unwrap();
    assert!(String::from_utf8_lossy(&value).contains("intruder"));
}

#[test]
fn membership_start_refuses_a_name_held_by_another_live_process() {
    let etcd = Etcd::start();
    let cfg = EtcdConfig {
        lease_ttl_ms: 2000,
        ..etcd_cfg(&etcd)
    };
    let me = NodeInfo {
        node_id: "same".into(),
        roles: vec![Role::Gate],
        internal_addr: "127.0.0.1:7200".into(),
    };
    let m1 = Arc::new(Members::new());
    let h = membership::start(&cfg, me.clone(), m1.clone()).unwrap();
    assert_eq!(m1.view().1.get("same"), Some(&me));
    let e = membership::start(&cfg, me.clone(), Arc::new(Members::new()))
        .err()
        .expect("the name is taken");
    assert!(matches!(e, EtcdError::NodeIdTaken { .. }), "{e}");
    // Stopped: the name is free at once.
    h.stop();
    let h2 = membership::start(&cfg, me, Arc::new(Members::new())).unwrap();
    h2.stop();
}

/// A fake etcd that answers every connection with `reply` (then closes), or accepts and says
/// nothing when `reply` is empty.
fn fake_server(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        let mut held = Vec::new();
        let mut served = 0;
        // Two connections per case (the lease store's, then membership's), or 5 s.
        while Instant::now() < end && served < 2 {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = s.read(&mut buf);
                    served += 1;
                    if reply.is_empty() {
                        held.push(s);
                    } else {
                        let _ = s.write_all(reply);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (port, t)
}

#[test]
fn garbage_cut_responses_and_silence_are_errors_not_panics() {
    let cases: [(&'static [u8], &str); 5] = [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "etcd protocol"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"header\":",
            "closed in the middle",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: appl",
            "closed in the middle",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            "not JSON",
        ),
        (b"", "timed out"),
    ];
    for (reply, want) in cases {
        let (port, t) = fake_server(reply);
        let cfg = EtcdConfig {
            endpoints: vec![format!("http://127.0.0.1:{port}")],
            request_timeout_ms: 300,
            ..EtcdConfig::default()
        };
        let stats = Arc::new(EtcdStats::default());
        let mut s = EtcdLeases::open(&cfg, stats.clone()).unwrap();
        let e = s
            .acquire(&Acquire {
                machine_id: None,
                max_id: 127,
                owner: "n",
                instance: "i",
                now_ms: now_ms(),
                ttl_ms: 5000,
            })
            .unwrap_err();
        assert!(matches!(e, LeaseError::Backend(_)), "{e}");
        assert!(e.to_string().contains(want), "{want}: {e}");
        let me = NodeInfo {
            node_id: "n".into(),
            roles: vec![Role::Logic],
            internal_addr: String::new(),
        };
        let e = membership::start(&cfg, me, Arc::new(Members::new()))
            .err()
            .expect("no etcd there");
        assert!(
            matches!(e, EtcdError::Protocol(_) | EtcdError::Unreachable(_)),
            "{e}"
        );
        let _ = t.join();
    }
    // An oversized answer is refused by the bound, not read whole.
    let (port, t) = fake_server(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n{");
    let cfg = EtcdConfig {
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        request_timeout_ms: 300,
        ..EtcdConfig::default()
    };
    let e = membership::start(
        &cfg,
        NodeInfo {
            node_id: "n".into(),
            roles: vec![],
            internal_addr: String::new(),
        },
        Arc::new(Members::new()),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("larger than"), "{e}");
    // One connection only: the fake server's thread ends on its own (5 s); not waited for.
    drop(t);
}

/// The lease id bound to `key`.
fn lease_of(etcd: &Etcd, key: &str) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD;
    let v = etcd
        .call("/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b.encode(key)))
        .unwrap();
    v["kvs"][0]["lease"]
        .as_str()
        .expect("bound to a lease")
        .to_string()
}

/// A key's JSON value.
fn value_of(etcd: &Etcd, key: &str) -> serde_json::Value {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD;
    let v = etcd
        .call("/v3/kv/range", &format!(r#"{{"key":"{}"}}"#, b.encode(key)))
        .unwrap();
    let raw = b
        .decode(v["kvs"][0]["value"].as_str().expect("the key exists"))
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// Two nodes on one host (one host name: here one `center.node`) with their own
/// `cluster.node_id`s lease their machine ids under those names: neither takes the other's id,
/// and each process's `nodes/` and `machine-ids/` keys carry one instance token.
#[test]
fn nodes_of_one_host_named_by_node_id_keep_their_own_machine_ids() {
    let etcd = Etcd::start();
    let a = node(&etcd, "host", &["--cluster.node_id", "logic-a"]);
    let b = node(&etcd, "host", &["--cluster.node_id", "logic-b"]);
    wait_for(10, "a sees both", || {
        view(&a) == ids(&["logic-a", "logic-b"])
    });
    let (ma, mb) = (
        a.metric("lattice_center_machine_id"),
        b.metric("lattice_center_machine_id"),
    );
    assert_ne!(ma, mb);
    // Past a few renewals (center.renew_interval_ms), both still hold their ids.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(a.metric("lattice_center_lease_lost"), 0, "{}", a.logs());
    assert_eq!(b.metric("lattice_center_lease_lost"), 0, "{}", b.logs());
    for (name, id) in [("logic-a", ma), ("logic-b", mb)] {
        let node = value_of(&etcd, &format!("lattice/nodes/{name}"));
        let lease = value_of(&etcd, &format!("lattice/machine-ids/{id}"));
        assert_eq!(lease["owner"], name, "{lease}");
        assert_eq!(node["instance"], lease["instance"], "{node} {lease}");
    }
}

#[test]
fn an_expired_machine_id_lease_is_taken_again_only_if_nobody_held_the_id_meanwhile() {
    let etcd = Etcd::start();
    let c = Center::start(&center_cfg("n1", 4), store(&etcd), 1, now_ms).unwrap();
    // The etcd lease ends behind the holder's back (as after an outage longer than the TTL):
    // nobody took the id, so the next renewal leases it again and ids go on.
    let old = lease_of(&etcd, "lattice/machine-ids/4");
    assert!(etcd
        .call("/v3/lease/revoke", &format!(r#"{{"ID":"{old}"}}"#))
        .is_some());
    wait_for(10, "re-leased under a new etcd lease", || {
        etcd.keys("lattice/machine-ids/") == ids(&["lattice/machine-ids/4"])
            && lease_of(&etcd, "lattice/machine-ids/4") != old
    });
    let before = c.lease().ceiling_ms();
    wait_for(10, "renewals go on", || c.lease().ceiling_ms() > before);
    let mut g = IdGen::new(c.lease(), 0, c.floor_ms());
    assert!(g.next(now_ms()).is_ok());

    c.stop();

    // This time another node takes the id while the lease is gone, and gives it back: its ids
    // moved the id's last timestamp, so the old holder must not take the id again. (Stores
    // driven directly: no renewal thread racing the other node.)
    let mut s1 = store(&etcd);
    let t = now_ms();
    let acquire = |owner: &'static str, instance: &'static str| Acquire {
        machine_id: Some(4),
        max_id: 127,
        owner,
        instance,
        now_ms: t,
        ttl_ms: 5000,
    };
    s1.acquire(&acquire("n1", "one")).unwrap();
    s1.renew(4, "one", t + 5000, t + 1000).unwrap();
    let old = lease_of(&etcd, "lattice/machine-ids/4");
    assert!(etcd
        .call("/v3/lease/revoke", &format!(r#"{{"ID":"{old}"}}"#))
        .is_some());
    let mut s2 = store(&etcd);
    let row = s2.acquire(&acquire("n2", "two")).unwrap();
    assert!(row.last_ts_ms >= t + 1000, "n2 sees n1's reservation");
    s2.renew(4, "two", t + 5000, t + 20_000).unwrap();
    assert!(s2.release(4, "two", Some(t + 15_000)).unwrap());
    let e = s1.renew(4, "one", t + 5000, t + 2000).unwrap_err();
    assert!(matches!(e, LeaseError::Lost { id: 4, .. }), "{e}");
    assert!(etcd.keys("lattice/machine-ids/").is_empty());
}

#[test]
fn the_machine_id_tool_refuses_when_ids_live_in_etcd() {
    let out = Command::new(env!("CARGO_BIN_EXE_lattice"))
        .args([
            "tool",
            "machine-id",
            "show",
            "--etcd.endpoints",
            r#"["http://127.0.0.1:9"]"#,
        ])
        .output()
        .expect("run lattice");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("machine ids are leased in etcd"), "{err}");
}

#[test]
fn views_converge_with_frequent_resyncs_that_reopen_the_watch() {
    let etcd = Etcd::start();
    let cfg = EtcdConfig {
        resync_interval_ms: 100,
        ..etcd_cfg(&etcd)
    };
    let node = |id: &str| NodeInfo {
        node_id: id.into(),
        roles: vec![Role::Gate, Role::Logic],
        internal_addr: format!("10.0.0.1:{}", id.len()),
    };
    let (m1, m2) = (Arc::new(Members::new()), Arc::new(Members::new()));
    let s1 = Arc::new(EtcdStats::default());
    let h1 = membership::start_with(&cfg, node("x"), m1.clone(), s1.clone()).unwrap();
    let h2 = membership::start(&cfg, node("yy"), m2.clone()).unwrap();
    let names = |m: &Members| -> Vec<String> {
        m.view().1.nodes.iter().map(|n| n.node_id.clone()).collect()
    };
    wait_for(10, "both views have both", || {
        names(&m1) == ids(&["x", "yy"]) && names(&m2) == ids(&["x", "yy"])
    });
    assert_eq!(m1.view().1.get("yy"), Some(&node("yy")));
    // Resyncs keep happening (each a range and a new watch) without disturbing the view.
    let mut text = String::new();
    s1.render(&mut lattice_runtime::telemetry::prom::Writer::new(
        &mut text,
    ));
    let requests = |t: &str| -> u64 {
        t.lines()
            .find(|l| l.starts_with("lattice_etcd_requests_total "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let before = requests(&text);
    let g = m1.generation();
    wait_for(10, "resyncs go on", || {
        let mut t = String::new();
        s1.render(&mut lattice_runtime::telemetry::prom::Writer::new(&mut t));
        requests(&t) > before + 10
    });
    assert_eq!(
        m1.generation(),
        g,
        "an unchanged set is not published again"
    );
    h2.stop();
    wait_for(10, "x sees yy leave", || names(&m1) == ids(&["x"]));
    h1.stop();
}

/// Gates find logic nodes through etcd: two logic-only nodes register their internal listeners,
/// a gate-only node learns them from its view, opens links and spreads its clients' requests over
/// both; a logic node killed with SIGKILL leaves the gate's view when its lease expires, and the
/// survivor then serves every session. (With `cluster.static_peers` instead of etcd, the same
/// routing is tested in cluster_links.rs and across network namespaces in cluster_netns.rs.)
#[test]
fn a_gate_routes_to_the_logic_nodes_etcd_lists_and_drops_a_killed_one_when_its_lease_expires() {
    use common::cluster::{ping, pings_handled};
    use lattice_proto::AnyMessage;
    let etcd = Etcd::start();
    let logic_node = |name: &str| {
        let internal = free_port();
        let listeners = format!(
            r#"[{{ addr = "127.0.0.1:{internal}", stack = "binary", session = "internal" }}]"#
        );
        node(
            &etcd,
            name,
            &[
                "--cluster.node_id",
                name,
                "--cluster.roles",
                r#"["logic"]"#,
                "--listeners.extra",
                &listeners,
            ],
        )
    };
    let a = logic_node("logic-a");
    let mut b = logic_node("logic-b");
    let g = node(
        &etcd,
        "gate-1",
        &[
            "--cluster.node_id",
            "gate-1",
            "--cluster.roles",
            r#"["gate"]"#,
            // Keep-alive Pings would be counted as handled Pings below.
            "--cluster.link_keepalive_ms",
            "60000",
            "--cluster.link_timeout_ms",
            "120000",
            "--cluster.link_down_grace_ms",
            "1000",
        ],
    );
    wait_for(20, "the gate sees both logic nodes", || {
        view(&g) == ids(&["gate-1", "logic-a", "logic-b"])
    });
    let roles = g.admin_ok("GET", "/admin/cluster", "");
    let logic_b = roles["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "logic-b")
        .cloned()
        .unwrap();
    assert_eq!(logic_b["roles"], serde_json::json!(["logic"]), "{roles}");
    for n in ["logic-a", "logic-b"] {
        wait_for(20, "links up", || {
            g.metrics()
                .contains(&format!("lattice_link_up{{peer=\"{n}\"}} 1"))
        });
    }
    let mut clients: Vec<common::Client> = (0..16).map(|_| g.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert!(matches!(ping(c, i as u32 + 1, b"x"), AnyMessage::Pong(_)));
    }
    let (ha, hb) = (pings_handled(&a), pings_handled(&b));
    assert_eq!(ha + hb, 16);
    assert!(
        ha > 0 && hb > 0,
        "both logic nodes own sessions: a={ha} b={hb}"
    );

    unsafe_free_kill(b.child.id(), "KILL");
    let _ = b.child.wait();
    let killed = Instant::now();
    wait_for(20, "logic-b leaves the gate's view", || {
        view(&g) == ids(&["gate-1", "logic-a"])
    });
    // Reported, not asserted (tests never assert on timing): TTL 3 s here.
    eprintln!(
        "logic-b left the gate's view {} ms after SIGKILL (etcd.lease_ttl_ms 3000)",
        killed.elapsed().as_millis()
    );
    for (i, c) in clients.iter_mut().enumerate() {
        let m = ping(c, 100 + i as u32, b"y");
        assert!(matches!(m, AnyMessage::Pong(_)), "after b left: {m:?}");
    }
    assert_eq!(pings_handled(&a), ha + 16, "the survivor served them all");
}

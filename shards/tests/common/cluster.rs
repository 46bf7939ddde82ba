//! Cluster test helpers: logic nodes with an `internal` listener, gates over static peers, and
//! what their metrics say (docs/CLUSTER.md).

use super::*;

/// A logic-only node and the port of its internal listener.
pub struct Logic {
    pub node: Lattice,
    pub internal: u16,
    pub name: String,
}

pub fn logic(name: &str, extra: &[&str]) -> Logic {
    logic_on(name, free_port(), extra)
}

pub fn logic_on(name: &str, internal: u16, extra: &[&str]) -> Logic {
    let listeners =
        format!(r#"[{{ addr = "127.0.0.1:{internal}", stack = "binary", session = "internal" }}]"#);
    let mut args = vec![
        "--listeners.extra",
        &listeners,
        "--cluster.node_id",
        name,
        "--cluster.roles",
        r#"["logic"]"#,
    ];
    args.extend_from_slice(extra);
    Logic {
        node: Lattice::start(&args),
        internal,
        name: name.into(),
    }
}

pub fn peers(nodes: &[(&str, u16)]) -> String {
    let list: Vec<String> = nodes
        .iter()
        .map(|(n, p)| {
            format!(r#"{{ node_id = "{n}", roles = ["logic"], internal_addr = "127.0.0.1:{p}" }}"#)
        })
        .collect();
    format!("[{}]", list.join(", "))
}

pub fn gate(name: &str, peers: &str, extra: &[&str]) -> Lattice {
    gate_env(name, peers, &[], extra)
}

/// As [`gate`], with environment variables `env` set for the server (fault hooks).
pub fn gate_env(name: &str, peers: &str, env: &[(&str, &str)], extra: &[&str]) -> Lattice {
    let mut args = vec![
        "--cluster.node_id",
        name,
        "--cluster.roles",
        r#"["gate"]"#,
        "--cluster.static_peers",
        peers,
    ];
    if !extra.contains(&"--cluster.link_keepalive_ms") {
        // The keep-alive is a Ping the logic node counts: tests that count Pings handled keep
        // it out of their way.
        args.extend_from_slice(&[
            "--cluster.link_keepalive_ms",
            "60000",
            "--cluster.link_timeout_ms",
            "120000",
        ]);
    }
    args.extend_from_slice(extra);
    Lattice::start_env(env, &args)
}

/// Sends a Ping and waits for its answer (a Pong or an Error).
pub fn ping(c: &mut Client, rid: u32, payload: &[u8]) -> AnyMessage {
    c.send(
        rid,
        &pb::Ping {
            payload: payload.to_vec(),
        },
    );
    let f = c.recv();
    assert_eq!(f.request_id, rid);
    f.decode()
}

pub fn pings_handled(l: &Lattice) -> u64 {
    l.metrics()
        .lines()
        .filter(|x| x.starts_with("lattice_requests_total{") && x.contains("msg=\"Ping\""))
        .map(|x| x.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

pub fn link_metric(g: &Lattice, name: &str, peer: &str) -> u64 {
    let needle = format!("{name}{{peer=\"{peer}\"}} ");
    g.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|v| v.parse().unwrap()))
        .unwrap_or_else(|| panic!("no {needle} in the gate's metrics"))
}

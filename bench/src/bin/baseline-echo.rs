//! The baseline: a plain echo server speaking Lattice's frame format on tokio, one current-thread
//! runtime per thread. It answers `Hello` with `Welcome` and `Ping` with `Pong` (the same body: the
//! two messages share their encoding), doing no decoding, routing or accounting. `compare.sh` runs it
//! side by side with `lattice` to put Lattice's figures in proportion.
//!
//! Usage: baseline-echo [--listen ADDR] [--threads N]

use std::net::TcpListener;

use lattice_bench::wire::{parse_flags, put_frame, whole_frame};
use lattice_proto::{opcode, pb};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut listen = "127.0.0.1:7200".to_string();
    let mut threads = 1usize;
    for (k, v) in parse_flags(&args).unwrap_or_else(|e| {
        eprintln!("baseline-echo: {e}");
        std::process::exit(2)
    }) {
        match k.as_str() {
            "listen" => listen = v,
            "threads" => threads = v.parse().unwrap_or(1).max(1),
            _ => {
                eprintln!("baseline-echo: unknown option --{k}");
                std::process::exit(2)
            }
        }
    }
    let listener = TcpListener::bind(&listen).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    eprintln!("baseline-echo listening on {listen} with {threads} thread(s)");
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let l = listener.try_clone().expect("clone listener");
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let l = tokio::net::TcpListener::from_std(l).expect("listener");
                    loop {
                        let Ok((s, _)) = l.accept().await else {
                            continue;
                        };
                        let _ = s.set_nodelay(true);
                        tokio::task::spawn_local(serve(s));
                    }
                })
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

async fn serve(mut s: tokio::net::TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match s.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have += n;
        let mut off = 0;
        out.clear();
        loop {
            let h = match whole_frame(&buf[off..have], 1 << 20) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(_) => return,
            };
            let body = &buf[off + 12..off + h.len];
            match h.opcode {
                opcode::HELLO => {
                    let w = pb::Welcome {
                        server_version: lattice_proto::version::PROTOCOL.to_string(),
                        session_id: 1,
                        ..Default::default()
                    };
                    put_frame(&mut out, opcode::WELCOME, 0, h.rid, &w.encode_to_vec());
                }
                opcode::PING => put_frame(&mut out, opcode::PONG, h.flags, h.rid, body),
                _ => {}
            }
            off += h.len;
        }
        buf.copy_within(off..have, 0);
        have -= off;
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
    }
}

//! Helpers of the account tests: requests that skip server pushes, clients from chosen source
//! addresses, and the account messages.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use lattice_proto::{pb, AnyMessage, LatticeMessage};

use super::common::{Client, RawFrame};

/// Sends `msg` with request id `rid` and returns the answer to it; pushes that arrive first
/// (`IconManifest`, `ProfileChanged`, …) are returned in `pushes`.
pub fn call<T: LatticeMessage>(c: &mut Client, rid: u32, msg: &T) -> (AnyMessage, Vec<RawFrame>) {
    c.send(rid, msg);
    let mut pushes = Vec::new();
    loop {
        let f = c.recv();
        if f.request_id == rid && rid != 0 {
            return (f.decode(), pushes);
        }
        pushes.push(f);
    }
}

/// `call` returning only the answer.
pub fn ask<T: LatticeMessage>(c: &mut Client, rid: u32, msg: &T) -> AnyMessage {
    call(c, rid, msg).0
}

/// The error code of an answer, panicking on anything else.
pub fn code(m: &AnyMessage) -> u32 {
    match m {
        AnyMessage::Error(e) => e.code,
        other => panic!("expected an Error, got {other:?}"),
    }
}

pub fn register(account: &str, password: &str, nickname: &str) -> pb::Register {
    pb::Register {
        account: account.into(),
        password: password.into(),
        nickname: nickname.into(),
    }
}

pub fn login(account: &str, password: &str) -> pb::Login {
    pb::Login {
        account: account.into(),
        password: password.into(),
    }
}

/// Registers and logs in on `c`; returns `LoginOk`.
pub fn register_and_login(
    c: &mut Client,
    account: &str,
    password: &str,
    nick: &str,
) -> pb::LoginOk {
    match ask(c, 9001, &register(account, password, nick)) {
        AnyMessage::RegisterOk(_) => {}
        other => panic!("register {account}: {other:?}"),
    }
    match ask(c, 9002, &login(account, password)) {
        AnyMessage::LoginOk(ok) => ok,
        other => panic!("login {account}: {other:?}"),
    }
}

/// A client whose connection comes from `127.0.0.<last>` and that said Hello.
pub fn connect_from(port: u16, last: u8) -> Client {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, last), 0));
    s.bind(&src.into()).unwrap();
    let dst = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    s.connect(&dst.into()).unwrap();
    let stream: std::net::TcpStream = s.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    Client::handshake(stream)
}

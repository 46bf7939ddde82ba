//! The committed TypeScript client (proto/ts/) must be what the generator writes today.

use std::path::PathBuf;

#[test]
fn committed_ts_client_is_up_to_date() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ts");
    let stale = lattice_proto::ts::stale_files(&dir);
    assert!(
        stale.is_empty(),
        "proto/ts is stale ({}): run `cargo run -p lattice-proto -- gen-ts --out proto/ts` and commit",
        stale.join(", ")
    );
}

#[test]
fn no_client_messages_are_not_exported() {
    let (_, messages) = lattice_proto::ts::FILES
        .iter()
        .find(|(n, _)| *n == "messages.ts")
        .expect("messages.ts generated");
    let (_, protocol) = lattice_proto::ts::FILES
        .iter()
        .find(|(n, _)| *n == "protocol.ts")
        .expect("protocol.ts generated");
    for info in lattice_proto::all() {
        let class = format!("export class {} ", info.name);
        let member = format!("  {} = {},", info.name, info.opcode);
        if info.no_client {
            assert!(
                !messages.contains(&class),
                "{} leaked into messages.ts",
                info.name
            );
            assert!(
                !protocol.contains(&member),
                "{} leaked into Opcode",
                info.name
            );
        } else {
            assert!(
                messages.contains(&class),
                "{} missing from messages.ts",
                info.name
            );
            assert!(
                protocol.contains(&member),
                "{} missing from Opcode",
                info.name
            );
        }
    }
    assert!(protocol.contains(&format!(
        "PROTOCOL_VERSION = \"{}\"",
        lattice_proto::version::PROTOCOL
    )));
}

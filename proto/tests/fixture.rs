//! The TypeScript exporter on every field shape it supports (`fixtures/lattice/fixture.proto`):
//! - the generated fixture TS committed in `proto/ts-test/fixture/` must be current;
//! - `proto/ts-test/golden/fixture-bodies.json` holds prost encodings of fixture messages, which the
//!   TS tests decode field by field and re-encode byte for byte.
//!
//! `LATTICE_UPDATE_GOLDEN=1` rewrites both instead of failing.

use std::path::PathBuf;

use prost::Message;
use serde_json::{json, Value};

#[allow(clippy::all, dead_code)]
mod fx {
    include!(concat!(env!("OUT_DIR"), "/fixture/lattice.rs"));
}

const TS: [(&str, &str); 2] = [
    (
        "messages.ts",
        include_str!(concat!(env!("OUT_DIR"), "/ts-fixture/messages.ts")),
    ),
    (
        "protocol.ts",
        include_str!(concat!(env!("OUT_DIR"), "/ts-fixture/protocol.ts")),
    ),
];

fn update() -> bool {
    std::env::var("LATTICE_UPDATE_GOLDEN").is_ok_and(|v| v == "1")
}

fn ts_test_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ts-test")
}

fn check_or_write(path: PathBuf, text: &str) {
    if update() {
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("create dir");
        std::fs::write(&path, text).expect("write");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is stale: rerun with LATTICE_UPDATE_GOLDEN=1 cargo test -p lattice-proto --test fixture, then deploy/ci/ts.sh",
        path.display()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn full() -> fx::Kitchen {
    use fx::kitchen::{Choice, Inner};
    fx::Kitchen {
        d: 0.1,
        f: 1.5,
        i32: -5,
        i64: -9_007_199_254_740_993,
        u32: u32::MAX,
        u64: u64::MAX,
        s32: i32::MIN,
        s64: i64::MIN,
        fx32: 4_000_000_000,
        fx64: 1 << 60,
        sfx32: -7,
        sfx64: -8,
        flag: true,
        text: "snow ☃".into(),
        blob: vec![0, 255, 1],
        color: fx::Color::Negative as i32,
        inner: Some(Inner {
            name: "in".into(),
            vals: vec![-1, 2, i64::MIN],
            color: fx::Color::Blue as i32,
        }),
        pos: Some(fx::Vec3 {
            x: 1.0,
            y: -2.0,
            z: 0.5,
        }),
        ri32: vec![1, -1, 300],
        rtext: vec!["a".into(), String::new(), "c".into()],
        rinner: vec![
            Inner::default(),
            Inner {
                name: "r".into(),
                vals: vec![7],
                color: fx::Color::Red as i32,
            },
        ],
        rcolor: vec![1, 2, -3],
        rd: vec![0.0, -0.25, 1e300],
        rfx64: vec![0, u64::MAX],
        maybe: Some(0),
        maybe_text: None,
        after: 9,
        choice: Some(Choice::PickNum(-1)),
    }
}

fn full_json() -> Value {
    json!({
        "d": 0.1, "f": 1.5, "i32": -5, "i64": "-9007199254740993", "u32": 4294967295u32,
        "u64": "18446744073709551615", "s32": -2147483648i64, "s64": "-9223372036854775808",
        "fx32": 4000000000u32, "fx64": "1152921504606846976", "sfx32": -7, "sfx64": "-8",
        "flag": true, "text": "snow ☃", "blob": "00ff01", "color": -3,
        "inner": {"name": "in", "vals": ["-1", "2", "-9223372036854775808"], "color": 2},
        "pos": {"x": 1.0, "y": -2.0, "z": 0.5},
        "ri32": [1, -1, 300], "rtext": ["a", "", "c"],
        "rinner": [{"name": "", "vals": [], "color": 0}, {"name": "r", "vals": ["7"], "color": 1}],
        "rcolor": [1, 2, -3], "rd": [0.0, -0.25, 1e300], "rfx64": ["0", "18446744073709551615"],
        "maybe": 0, "maybeText": null, "pickText": null, "pickNum": -1, "after": 9
    })
}

fn default_json() -> Value {
    json!({
        "d": 0, "f": 0, "i32": 0, "i64": "0", "u32": 0, "u64": "0", "s32": 0, "s64": "0",
        "fx32": 0, "fx64": "0", "sfx32": 0, "sfx64": "0", "flag": false, "text": "", "blob": "",
        "color": 0, "inner": null, "pos": null, "ri32": [], "rtext": [], "rinner": [], "rcolor": [],
        "rd": [], "rfx64": [], "maybe": null, "maybeText": null, "pickText": null, "pickNum": null,
        "after": 0
    })
}

#[test]
fn committed_fixture_ts_is_current() {
    for (name, text) in TS {
        check_or_write(ts_test_dir().join("fixture").join(name), text);
    }
    let (_, messages) = TS[0];
    assert!(messages.contains("export class Kitchen "));
    assert!(messages.contains("export class Kitchen_Inner "));
    assert!(messages.contains("export class Vec3 "));
    assert!(
        !messages.contains("Internal"),
        "no_client message leaked into TS"
    );
}

#[test]
fn fixture_bodies_match_committed_golden_file() {
    use fx::kitchen::Choice;
    let numbers = fx::Kitchen {
        i64: -5,
        u64: 7,
        s64: -3,
        fx64: 1,
        sfx64: -2,
        rinner: vec![fx::kitchen::Inner {
            name: "x".into(),
            ..Default::default()
        }],
        rfx64: vec![5],
        ..Default::default()
    };
    let mut numbers_json = default_json();
    for (k, v) in [
        ("i64", json!("-5")),
        ("u64", json!("7")),
        ("s64", json!("-3")),
        ("fx64", json!("1")),
        ("sfx64", json!("-2")),
        ("rinner", json!([{"name": "x", "vals": [], "color": 0}])),
        ("rfx64", json!(["5"])),
    ] {
        numbers_json[k] = v;
    }
    let empty_choice = fx::Kitchen {
        choice: Some(Choice::PickText(String::new())),
        maybe_text: Some(String::new()),
        ..Default::default()
    };
    let mut empty_choice_json = default_json();
    empty_choice_json["pickText"] = json!("");
    empty_choice_json["maybeText"] = json!("");

    let vectors = [
        ("kitchen_full", full(), full_json()),
        ("kitchen_default", fx::Kitchen::default(), default_json()),
        ("kitchen_numbers", numbers, numbers_json),
        ("kitchen_present_but_empty", empty_choice, empty_choice_json),
    ];
    let entries: Vec<Value> = vectors
        .iter()
        .map(|(name, msg, js)| {
            let body = msg.encode_to_vec();
            assert_eq!(
                &fx::Kitchen::decode(&body[..]).expect("own encoding"),
                msg,
                "{name}"
            );
            json!({"name": name, "body": hex(&body), "message": js})
        })
        .collect();
    // The oneof straddling field 30 is encoded before it (prost order), which the TS side must match.
    let full_body = hex(&full().encode_to_vec());
    assert!(
        full_body.ends_with("f801ffffffffffffffffff01f00109"),
        "{full_body}"
    );
    let text = serde_json::to_string_pretty(&json!({
        "comment": "prost encodings of fixtures/lattice/fixture.proto messages (proto/tests/fixture.rs)",
        "vectors": entries,
    }))
    .expect("serialise")
        + "\n";
    check_or_write(ts_test_dir().join("golden/fixture-bodies.json"), &text);
}

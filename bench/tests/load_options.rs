//! `lattice-load`'s options and exit codes, without a server: a bad option is exit 2 naming it, and
//! a run that measured nothing or could not write its report is exit 1.

use std::process::{Command, Output};

fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lattice-load"))
        .args(args)
        .output()
        .expect("run lattice-load")
}

#[test]
fn out_of_range_options_are_refused_naming_the_option() {
    for (args, needle) in [
        (&["--depth", "0"][..], "--depth"),
        (&["--depth", "99999999999"], "--depth"),
        (&["--sources", "0"], "--sources"),
        (&["--sources", "300"], "--sources"),
        (&["--rooms", "0"], "--rooms"),
        (&["--payload", "99999999"], "--payload"),
        (&["--duration", "0"], "--duration"),
        (&["--connections", "0"], "--connections"),
        (&["--addr", "no-port"], "--addr"),
    ] {
        let o = load(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn nothing_measured_and_an_unwritable_report_are_failures() {
    // Port 1 on loopback: every connection is refused, so no round trip is measured, and the
    // errors stay within --max-errors.
    let common = [
        "--addr",
        "localhost:1",
        "--connections",
        "2",
        "--duration",
        "0.2",
        "--warmup",
        "0",
        "--max-errors",
        "10",
        "--quiet",
    ];
    let o = load(&common);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no round trip was measured"),
        "{o:?}"
    );
    let mut args = common.to_vec();
    args.extend([
        "--scenario",
        "idle",
        "--report",
        "/nonexistent-dir/report.json",
    ]);
    let o = load(&args);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot write report"),
        "{o:?}"
    );
}

//! Allocator benchmark: glibc (system), jemalloc, mimalloc, snmalloc and lattice-alloc in one
//! process, cases interleaved, medians and IQR. See bench/results/alloc.md.
//!
//! Usage: `alloc_bench [--reps N] [--scale F] [--soak-secs S] [--meta-reps N] [--only SUBSTR[|SUBSTR...]]
//! [--profile ALLOC] [--pause-ms MS]` (`--profile` runs the selected cases for one allocator, no report;
//! `--profile floor` runs the `xfree_pingpong` harness without an allocator).
//! Child mode (used internally): `alloc_bench --child meta|soak ALLOC [SECS]`.

#[path = "../alloc/cases.rs"]
mod cases;
#[path = "../alloc/child.rs"]
mod child;

use std::alloc::System;
use std::collections::BTreeMap;
use std::process::Command;

use cases::{Alloc, Scale};

static SYSTEM: System = System;
static JE: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static MI: mimalloc::MiMalloc = mimalloc::MiMalloc;
static SN: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;
static LA: lattice_alloc::LatticeAlloc = lattice_alloc::LatticeAlloc::new();

const NAMES: [&str; 5] = ["glibc", "jemalloc", "mimalloc", "snmalloc", "lattice"];
/// Results key of a case's harness run without any allocator (`xfree_pingpong` only).
const FLOOR: &str = "floor";

fn by_name(n: &str) -> Alloc {
    match n {
        "glibc" => &SYSTEM,
        "jemalloc" => &JE,
        "mimalloc" => &MI,
        "snmalloc" => &SN,
        "lattice" => &LA,
        other => {
            eprintln!("unknown allocator {other}");
            std::process::exit(2)
        }
    }
}

type Case = (&'static str, fn(Alloc, &Scale) -> f64);

fn cases() -> Vec<Case> {
    vec![
        ("st_pair/16", |a, s| cases::st_pair(a, 16, s)),
        ("st_pair/64", |a, s| cases::st_pair(a, 64, s)),
        ("st_pair/256", |a, s| cases::st_pair(a, 256, s)),
        ("st_pair/1024", |a, s| cases::st_pair(a, 1024, s)),
        ("st_pair/4096", |a, s| cases::st_pair(a, 4096, s)),
        ("st_batch/lifo", |a, s| cases::st_batch(a, "lifo", s)),
        ("st_batch/fifo", |a, s| cases::st_batch(a, "fifo", s)),
        ("st_batch/random", |a, s| cases::st_batch(a, "random", s)),
        ("churn_ws/10k", |a, s| cases::churn_ws(a, 10_000, s)),
        ("churn_ws/100k", |a, s| cases::churn_ws(a, 100_000, s)),
        ("xfree_spsc/64", |a, s| cases::xfree_spsc(a, 64, s)),
        ("xfree_spsc/512", |a, s| cases::xfree_spsc(a, 512, s)),
        ("xfree_spsc/mixed", |a, s| cases::xfree_spsc(a, 0, s)),
        ("xfree_pingpong", cases::xfree_pingpong),
        ("xfree_burst", cases::xfree_burst),
        ("large/64KiB", |a, s| cases::large(a, 64 << 10, s)),
        ("large/1MiB", |a, s| cases::large(a, 1 << 20, s)),
        ("large/16MiB", |a, s| cases::large(a, 16 << 20, s)),
    ]
}

fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| {
        let x = p * (v.len() - 1) as f64;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
    };
    (q(0.25), q(0.5), q(0.75))
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let what = args.get(i + 1).map(String::as_str).unwrap_or("");
        let name = args.get(i + 2).map(String::as_str).unwrap_or("");
        let al = by_name(name);
        match what {
            "meta" => child::meta_overhead(al, name == "lattice"),
            "soak" => child::rss_soak(
                al,
                args.get(i + 3).and_then(|s| s.parse().ok()).unwrap_or(60),
            ),
            _ => {
                eprintln!("unknown child mode {what}");
                std::process::exit(2)
            }
        }
        return;
    }
    let reps: usize = arg(&args, "--reps", 10);
    let scale = Scale(arg(&args, "--scale", 1.0));
    let soak_secs: u64 = arg(&args, "--soak-secs", 60);
    let meta_reps: usize = arg(&args, "--meta-reps", 5);
    let only: String = arg(&args, "--only", String::new());
    // Sleep after each case's round of allocators: run under `chrt -f` (real-time priority, so the
    // timings do not measure other processes' scheduling) it hands the machine back in between.
    let pause = std::time::Duration::from_millis(arg(&args, "--pause-ms", 0));
    println!(
        "# alloc_bench reps={reps} scale={} soak_secs={soak_secs} meta_reps={meta_reps}",
        scale.0
    );
    let cs: Vec<Case> = cases()
        .into_iter()
        .filter(|c| only.split('|').any(|o| c.0.contains(o)))
        .collect();
    let mut res: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    // warm-up: one untimed round of every case for every allocator
    let profile_only: String = arg(&args, "--profile", String::new());
    if !profile_only.is_empty() {
        // profiling aid: run the selected cases for one allocator only, no report
        if profile_only == FLOOR {
            for _ in 0..reps {
                let ns = cases::xfree_pingpong_floor(&scale);
                println!("xfree_pingpong floor {ns:.1} ns/op");
            }
            return;
        }
        for _ in 0..reps {
            for (case, f) in &cs {
                let before = lattice_alloc::snapshot().os_mapped_bytes;
                let ns = f(by_name(&profile_only), &scale);
                let mapped = lattice_alloc::snapshot().os_mapped_bytes - before;
                println!(
                    "{case} {profile_only} {ns:.1} ns/op; lattice mapped {} KiB during the case",
                    mapped >> 10
                );
            }
        }
        return;
    }
    for (_, f) in &cs {
        for n in NAMES {
            f(by_name(n), &Scale(scale.0 * 0.1));
        }
    }
    for rep in 0..reps {
        for (ci, (case, f)) in cs.iter().enumerate() {
            // rotate the allocator order per repetition and case, so no allocator always runs
            // right after the same neighbour
            for k in 0..NAMES.len() {
                let n = NAMES[(k + rep + ci) % NAMES.len()];
                let ns = f(by_name(n), &scale);
                res.entry((case, n)).or_default().push(ns);
            }
            if *case == "xfree_pingpong" {
                res.entry((case, FLOOR))
                    .or_default()
                    .push(cases::xfree_pingpong_floor(&scale));
            }
            std::thread::sleep(pause);
        }
        eprintln!("rep {}/{reps} done", rep + 1);
    }
    let exe = std::env::current_exe().expect("own path");
    // meta_overhead: a process per allocator per repetition, interleaved
    let mut meta: BTreeMap<&str, Vec<(f64, f64, f64)>> = BTreeMap::new();
    if only.is_empty() || only.split('|').any(|o| "meta_overhead".contains(o)) {
        for _ in 0..meta_reps {
            for n in NAMES {
                let out = Command::new(&exe)
                    .args(["--child", "meta", n])
                    .output()
                    .expect("child");
                let text = String::from_utf8_lossy(&out.stdout);
                let get = |k: &str| -> f64 {
                    text.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN)
                };
                meta.entry(n).or_default().push((
                    get("requested="),
                    get("rss_delta="),
                    get("lattice_meta=") / get("lattice_mapped="),
                ));
            }
        }
    }
    // rss_soak: a process per allocator, run one after another
    let mut soak: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    if soak_secs > 0 && (only.is_empty() || only.split('|').any(|o| "rss_soak".contains(o))) {
        for n in NAMES {
            let out = Command::new(&exe)
                .args(["--child", "soak", n, &soak_secs.to_string()])
                .output()
                .expect("child");
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = text
                .lines()
                .filter_map(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("bytes="))
                        .and_then(|v| v.parse().ok())
                })
                .collect();
            eprintln!("soak {n}: {} samples", v.len());
            soak.insert(n, v);
        }
    }
    report(&cs, &mut res, &meta, &soak);
}

fn report(
    cs: &[Case],
    res: &mut BTreeMap<(&str, &str), Vec<f64>>,
    meta: &BTreeMap<&str, Vec<(f64, f64, f64)>>,
    soak: &BTreeMap<&str, Vec<f64>>,
) {
    println!();
    println!("## Time per operation (ns, median [IQR]; lower is better)");
    println!();
    println!("| case | glibc | jemalloc | mimalloc | snmalloc | lattice | lattice / glibc | lattice / min(mi,sn) |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratios_glibc = Vec::new();
    let mut ratios_best = Vec::new();
    for (case, _) in cs {
        let mut row = format!("| {case} |");
        let mut med = BTreeMap::new();
        for n in NAMES {
            let v = res.get_mut(&(*case, n)).unwrap();
            let (q1, m, q3) = quartiles(v);
            med.insert(n, m);
            row += &format!(" {m:.1} [{q1:.1}–{q3:.1}] |");
        }
        let rg = med["lattice"] / med["glibc"];
        let rb = med["lattice"] / med["mimalloc"].min(med["snmalloc"]);
        ratios_glibc.push(rg);
        ratios_best.push(rb);
        row += &format!(" {rg:.2} | {rb:.2} |");
        println!("{row}");
    }
    if let Some(mut v) = res.get(&("xfree_pingpong", FLOOR)).cloned() {
        let (q1, m, q3) = quartiles(&mut v);
        let med = |n| {
            let mut x = res[&("xfree_pingpong", n)].clone();
            quartiles(&mut x).1
        };
        let (g, l) = (med("glibc"), med("lattice"));
        println!();
        println!(
            "xfree_pingpong without any allocator (the harness floor): {m:.1} [{q1:.1}–{q3:.1}] ns; \
             above the floor: glibc {:.1}, lattice {:.1} ns",
            g - m,
            l - m
        );
    }
    let gm = |v: &[f64]| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp();
    if !ratios_glibc.is_empty() {
        println!();
        println!(
            "Geometric mean of lattice / glibc: {:.2}; of lattice / min(mimalloc, snmalloc): {:.2}",
            gm(&ratios_glibc),
            gm(&ratios_best)
        );
        let mut allg = BTreeMap::new();
        for n in NAMES {
            let v: Vec<f64> = cs
                .iter()
                .map(|(c, _)| {
                    let mut x = res[&(*c, n)].clone();
                    quartiles(&mut x).1 / {
                        let mut g = res[&(*c, "glibc")].clone();
                        quartiles(&mut g).1
                    }
                })
                .collect();
            allg.insert(n, gm(&v));
        }
        println!(
            "Geometric mean of time / glibc per allocator: {}",
            NAMES
                .iter()
                .map(|n| format!("{n} {:.2}", allg[n]))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !meta.is_empty() {
        println!();
        println!("## meta_overhead (400 000 blocks of 16..128 B; RSS growth / requested bytes − 1, median [IQR])");
        println!();
        println!("| allocator | requested MB | RSS growth MB | overhead |");
        println!("|---|---|---|---|");
        for n in NAMES {
            let v = &meta[n];
            let mut over: Vec<f64> = v.iter().map(|(r, d, _)| d / r - 1.0).collect();
            let mut grow: Vec<f64> = v.iter().map(|(_, d, _)| d / 1e6).collect();
            let (q1, m, q3) = quartiles(&mut over);
            let (_, gm_, _) = quartiles(&mut grow);
            println!(
                "| {n} | {:.1} | {gm_:.1} | {:.1} % [{:.1}–{:.1}] |",
                v[0].0 / 1e6,
                m * 100.0,
                q1 * 100.0,
                q3 * 100.0
            );
        }
        if let Some(v) = meta.get("lattice") {
            let mut r: Vec<f64> = v.iter().map(|x| x.2).collect();
            let (_, m, _) = quartiles(&mut r);
            println!();
            println!(
                "lattice metadata / mapped (from its own counters): {:.3} %",
                m * 100.0
            );
        }
    }
    if !soak.is_empty() {
        println!();
        println!("## rss_soak (RSS sampled every second; MB)");
        println!();
        println!("| allocator | samples | peak | mean first half | mean second half | last | peak / glibc peak |");
        println!("|---|---|---|---|---|---|---|");
        let gpeak = soak
            .get("glibc")
            .and_then(|v| v.iter().cloned().reduce(f64::max))
            .unwrap_or(f64::NAN);
        for n in NAMES {
            let Some(v) = soak.get(n) else { continue };
            if v.is_empty() {
                println!("| {n} | 0 | – | – | – | – | – |");
                continue;
            }
            let peak = v.iter().cloned().fold(0.0, f64::max);
            let h = v.len() / 2;
            let mean = |s: &[f64]| {
                if s.is_empty() {
                    f64::NAN
                } else {
                    s.iter().sum::<f64>() / s.len() as f64
                }
            };
            println!(
                "| {n} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
                v.len(),
                peak / 1e6,
                mean(&v[..h.max(1)]) / 1e6,
                mean(&v[h..]) / 1e6,
                v[v.len() - 1] / 1e6,
                peak / gpeak
            );
        }
        println!();
        println!("RSS samples (MB, one per second):");
        println!();
        for n in NAMES {
            if let Some(v) = soak.get(n) {
                println!(
                    "- {n}: {}",
                    v.iter()
                        .map(|b| format!("{:.0}", b / 1e6))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
        }
    }
}

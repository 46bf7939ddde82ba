//! `GET /debug/pprof/profile?seconds=N`: a CPU profile of the running server as a flame graph SVG.
//!
//! Sampled in-process by `pprof` (SIGPROF from `ITIMER_PROF`, so only threads using CPU are
//! sampled) with the `framehop` unwinder, which reads unwind tables without locks or allocation
//! in the signal handler (the default libgcc unwinder is not async-signal-safe). The kernel
//! delivers at most CONFIG_HZ signals per second of CPU (250 on the reference machine), whatever
//! `profile.frequency` asks. The route runs on its own thread (a detached admin route), so
//! `/metrics` keeps answering during a profile; one profile runs at a time (409 otherwise).
//! Signals interrupt blocking system calls: the runtime and the admin listener retry on EINTR.

use std::time::Duration;

use lattice_runtime::telemetry::admin::{Request, Response, Routes};

use super::flame;

/// `[profile]` section.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Longest profile, in seconds.
    pub max_seconds: u64,
    /// Samples asked per second of CPU time.
    pub frequency: i32,
}

/// Default length of a profile when `seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 10;
/// The largest `profile.max_seconds`: an hour (the request's thread sleeps that long).
pub const MAX_SECONDS: u64 = 3600;
/// The largest `profile.frequency`: the highest CONFIG_HZ (the kernel delivers no more), and the
/// sampling interval (1e6 / frequency µs) stays at least 1 ms.
pub const MAX_FREQUENCY: i32 = 1000;

impl ProfileConfig {
    /// Bounds checked at load: `(key, problem)`. A frequency of 0 would divide by zero in the
    /// profiler, which then stays marked as running for the rest of the process.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_SECONDS).contains(&self.max_seconds) {
            return Err(("profile.max_seconds", format!("must be 1..={MAX_SECONDS}")));
        }
        if !(1..=MAX_FREQUENCY).contains(&self.frequency) {
            return Err((
                "profile.frequency",
                format!("must be 1..={MAX_FREQUENCY} samples per second"),
            ));
        }
        Ok(())
    }
}

/// Registers the route.
pub fn register(r: &mut Routes, cfg: ProfileConfig) {
    r.add_detached(
        "GET",
        "/debug/pprof/profile",
        Box::new(move |req| profile(req, cfg)),
    );
}

/// Reads `seconds` from the query: 1..=max, default [`DEFAULT_SECONDS`].
pub fn seconds(req: &Request, max: u64) -> Result<u64, String> {
    match req.query_param("seconds") {
        None => Ok(DEFAULT_SECONDS.min(max)),
        Some(s) => match lattice_wire::http::parse_digits::<u64>(s) {
            Some(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "seconds must be a whole number from 1 to {max} (profile.max_seconds), got {s:?}\n"
            )),
        },
    }
}

fn profile(req: &Request, cfg: ProfileConfig) -> Response {
    let secs = match seconds(req, cfg.max_seconds) {
        Ok(s) => s,
        Err(e) => return Response::error(400, e.trim_end()),
    };
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(cfg.frequency)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(g) => g,
        // The profiler is process-wide: the one error a valid request meets is a profile
        // already running.
        Err(e) if e.to_string().contains("start running cpu profiler error") => {
            return Response::error(
                409,
                "a CPU profile is already running: try again when it ends",
            );
        }
        Err(e) => {
            return Response::error(409, &format!("cannot start profiling: {e}"));
        }
    };
    tracing::info!(
        seconds = secs,
        frequency = cfg.frequency,
        "CPU profile started"
    );
    std::thread::sleep(Duration::from_secs(secs));
    let report = match guard.report().build() {
        Ok(r) => r,
        Err(e) => return Response::error(500, &format!("profile report failed: {e}")),
    };
    drop(guard);
    let mut samples = 0u64;
    let stacks: Vec<(Vec<String>, u64)> = report
        .data
        .iter()
        .map(|(frames, &n)| {
            let n = n.max(0) as u64;
            samples += n;
            let mut stack = vec![frames.thread_name_or_id()];
            // pprof gives frames leaf first; inlined symbols of one frame also leaf first.
            for f in frames.frames.iter().rev() {
                for sym in f.iter().rev() {
                    stack.push(sym.name());
                }
            }
            (stack, n)
        })
        .collect();
    tracing::info!(seconds = secs, samples, "CPU profile done");
    let title = format!(
        "lattice CPU profile: {secs} s, {samples} samples ({:.0} per CPU-second asked at {} Hz)",
        samples as f64 / secs as f64,
        cfg.frequency
    );
    let mut r = Response::new(200, "image/svg+xml", flame::svg(&title, stacks));
    r.headers
        .push(("X-Lattice-Samples".into(), samples.to_string()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(q: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/debug/pprof/profile".into(),
            query: q.trim_start_matches('?').into(),
            headers: Vec::new(),
            body: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(seconds(&req(""), 60), Ok(10));
        assert_eq!(seconds(&req(""), 5), Ok(5));
        assert_eq!(seconds(&req("?seconds=3"), 60), Ok(3));
        for bad in ["?seconds=0", "?seconds=61", "?seconds=x", "?seconds=-1"] {
            assert!(seconds(&req(bad), 60).is_err(), "{bad}");
        }
    }
}

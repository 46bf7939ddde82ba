//! Password hashing off the shards: Argon2id on a fixed pool of worker threads with a bounded
//! queue. A job that finds the queue full is refused at once ([`Busy`]; the caller answers `BUSY`),
//! so a login storm costs a bounded amount of memory and never blocks a shard.
//!
//! Memory: each worker owns one block buffer of `hash_memory_kib` (19 MiB by default), allocated
//! once and reused; the queue holds at most `hash_queue` jobs (a password each). So the pool uses
//! `workers × hash_memory_kib` plus the queue, whatever the load. Verifying a hash made with larger
//! parameters grows that worker's buffer once.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`, unpadded base64, 16-byte
//! random salt, 32-byte output), so they carry their own parameters and later settings can change.
//! One pool per process, shared by every shard ([`Hasher::global`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;

/// The pool is full: answer `BUSY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("password hashing is busy")]
pub struct Busy;

/// Work for a hash worker. Passwords travel in the job and are dropped after it.
pub enum Job {
    /// Hash a new password.
    Hash {
        /// The password.
        password: String,
    },
    /// Check a password against a stored PHC string.
    Verify {
        /// The password.
        password: String,
        /// The stored hash.
        phc: String,
    },
    /// Check `old` against `phc`; when it matches, hash `new` (a password change, one job).
    Change {
        /// The current password.
        old: String,
        /// The stored hash.
        phc: String,
        /// The new password.
        new: String,
    },
}

/// What a job produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new PHC string.
    Hashed(String),
    /// The password matched (or not).
    Verified(bool),
    /// `Change`: the new PHC string, or `None` when the old password did not match.
    Changed(Option<String>),
    /// The stored hash is not a PHC string this pool understands, or hashing failed.
    Failed(String),
}

struct SlotInner {
    out: Option<Outcome>,
    waker: Option<Waker>,
}

/// Completes when the worker finished the job. Await it on a shard (the waker is called from the
/// worker thread).
pub struct HashTicket(Arc<Mutex<SlotInner>>);

impl Future for HashTicket {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match g.out.take() {
            Some(o) => Poll::Ready(o),
            None => {
                g.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl HashTicket {
    /// Blocks until done (tests and tools; never on a shard).
    pub fn wait(self) -> Outcome {
        loop {
            if let Some(o) = self.0.lock().unwrap_or_else(|e| e.into_inner()).out.take() {
                return o;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

struct Queued {
    job: Job,
    slot: Arc<Mutex<SlotInner>>,
}

/// Counters of the pool (process-wide).
#[derive(Debug, Default)]
pub struct HashStats {
    /// Jobs finished.
    pub jobs: AtomicU64,
    /// Jobs refused because the queue was full.
    pub busy: AtomicU64,
    /// Microseconds spent hashing, all workers.
    pub busy_us: AtomicU64,
    /// Jobs queued or running now.
    pub in_flight: AtomicU64,
}

/// The hash worker pool.
pub struct Hasher {
    tx: SyncSender<Queued>,
    /// Kept so the queue stays open whatever happens to the workers.
    _rx: Arc<Mutex<Receiver<Queued>>>,
    params: Params,
    /// Counters.
    pub stats: Arc<HashStats>,
    workers: usize,
    queue: usize,
}

impl Hasher {
    /// Starts `workers` threads hashing with `memory_kib` and `passes`, queueing at most `queue`
    /// jobs beyond the running ones. Fails when the parameters are invalid or a thread cannot
    /// start.
    pub fn start(
        memory_kib: u32,
        passes: u32,
        workers: usize,
        queue: usize,
    ) -> Result<Hasher, String> {
        Hasher::spawn(memory_kib, passes, workers.max(1), queue)
    }

    /// [`Hasher::start`] with exactly `workers` threads (tests use 0 to fill the queue).
    fn spawn(memory_kib: u32, passes: u32, workers: usize, queue: usize) -> Result<Hasher, String> {
        let params =
            Params::new(memory_kib, passes, 1, Some(32)).map_err(|e| format!("argon2: {e}"))?;
        let (tx, rx) = sync_channel::<Queued>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(HashStats::default());
        for i in 0..workers {
            let (rx, stats, params) = (rx.clone(), stats.clone(), params.clone());
            std::thread::Builder::new()
                .name(format!("lattice-hash-{i}"))
                .spawn(move || worker(&rx, &stats, &params))
                .map_err(|e| format!("cannot start hash worker: {e}"))?;
        }
        Ok(Hasher {
            tx,
            _rx: rx,
            params,
            stats,
            workers,
            queue,
        })
    }

    /// The process's pool, started by the first caller with its settings; later callers share it.
    pub fn global(
        memory_kib: u32,
        passes: u32,
        workers: usize,
        queue: usize,
    ) -> Result<&'static Hasher, String> {
        static POOL: OnceLock<Result<Hasher, String>> = OnceLock::new();
        POOL.get_or_init(|| Hasher::start(memory_kib, passes, workers, queue))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Queue bound.
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// Hands `job` to the pool; [`Busy`] (counted) when the queue is full. Never blocks.
    pub fn submit(&self, job: Job) -> Result<HashTicket, Busy> {
        let slot = Arc::new(Mutex::new(SlotInner {
            out: None,
            waker: None,
        }));
        match self.tx.try_send(Queued {
            job,
            slot: slot.clone(),
        }) {
            Ok(()) => {
                self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
                Ok(HashTicket(slot))
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.busy.fetch_add(1, Ordering::Relaxed);
                Err(Busy)
            }
        }
    }

    /// The settings new hashes use.
    pub fn params(&self) -> &Params {
        &self.params
    }
}

fn worker(rx: &Mutex<Receiver<Queued>>, stats: &HashStats, params: &Params) {
    // The Argon2 memory (19 MiB at the default cost) is allocated by the first job and then kept
    // for the next ones: a server that never hashes never holds it (start-up memory budget).
    let mut mem: Vec<Block> = Vec::new();
    loop {
        // One worker waits on the receiver at a time; the others wait for the lock (the queue
        // hands out one job per wake-up).
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(Queued { job, slot }) = next else {
            return;
        };
        let t0 = Instant::now();
        let out = run(job, params, &mut mem);
        stats
            .busy_us
            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        stats.jobs.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let waker = {
            let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
            g.out = Some(out);
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

fn run(job: Job, params: &Params, mem: &mut Vec<Block>) -> Outcome {
    match job {
        Job::Hash { password } => match hash(&password, params, mem) {
            Ok(phc) => Outcome::Hashed(phc),
            Err(e) => Outcome::Failed(e),
        },
        Job::Verify { password, phc } => match verify(&password, &phc, mem) {
            Ok(ok) => Outcome::Verified(ok),
            Err(e) => Outcome::Failed(e),
        },
        Job::Change { old, phc, new } => match verify(&old, &phc, mem) {
            Ok(false) => Outcome::Changed(None),
            Ok(true) => match hash(&new, params, mem) {
                Ok(h) => Outcome::Changed(Some(h)),
                Err(e) => Outcome::Failed(e),
            },
            Err(e) => Outcome::Failed(e),
        },
    }
}

fn compute(
    password: &str,
    salt: &[u8],
    params: &Params,
    mem: &mut Vec<Block>,
    out: &mut [u8],
) -> Result<(), String> {
    if mem.len() < params.block_count() {
        mem.resize(params.block_count(), Block::new());
    }
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut mem[..])
        .map_err(|e| format!("argon2: {e}"))
}

/// Hashes `password` with a fresh random salt; returns the PHC string.
pub fn hash(password: &str, params: &Params, mem: &mut Vec<Block>) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
    let mut out = [0u8; 32];
    compute(password, &salt, params, mem, &mut out)?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        B64.encode(salt),
        B64.encode(out)
    ))
}

/// A PHC string that no password matches, with `params`: a random salt and a random hash (a
/// match would take a 256-bit collision). Verifying against it costs what verifying a real
/// account's password costs, so an unknown account name takes as long to refuse as a wrong
/// password.
pub fn decoy_phc(params: &Params) -> String {
    let mut bytes = [0u8; 48];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: any fixed value is as unmatchable in practice.
        bytes = [0x5a; 48];
    }
    format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        B64.encode(&bytes[..16]),
        B64.encode(&bytes[16..])
    )
}

/// Largest memory parameter accepted from a stored hash, KiB (4 GiB): a corrupt row cannot make a
/// worker allocate without bound.
const MAX_STORED_M_COST: u32 = 4 * 1024 * 1024;

/// Checks `password` against a PHC string made by [`hash`]. Constant-time comparison.
pub fn verify(password: &str, phc: &str, mem: &mut Vec<Block>) -> Result<bool, String> {
    let bad = || "stored password hash is not an argon2id PHC string".to_string();
    let mut parts = phc.split('$');
    if parts.next() != Some("") || parts.next() != Some("argon2id") || parts.next() != Some("v=19")
    {
        return Err(bad());
    }
    let (mut m, mut t, mut p) = (0u32, 0u32, 0u32);
    for kv in parts.next().ok_or_else(bad)?.split(',') {
        let (k, v) = kv.split_once('=').ok_or_else(bad)?;
        let v: u32 = v.parse().map_err(|_| bad())?;
        match k {
            "m" => m = v,
            "t" => t = v,
            "p" => p = v,
            _ => return Err(bad()),
        }
    }
    if m > MAX_STORED_M_COST {
        return Err(bad());
    }
    let salt = B64
        .decode(parts.next().ok_or_else(bad)?)
        .map_err(|_| bad())?;
    let want = B64
        .decode(parts.next().ok_or_else(bad)?)
        .map_err(|_| bad())?;
    if parts.next().is_some() || want.len() < 16 || want.len() > 64 {
        return Err(bad());
    }
    let params = Params::new(m, t, p, Some(want.len())).map_err(|e| format!("argon2: {e}"))?;
    let mut got = vec![0u8; want.len()];
    compute(password, &salt, &params, mem, &mut got)?;
    Ok(got.iter().zip(&want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Params {
        Params::new(8, 1, 1, Some(32)).unwrap()
    }

    #[test]
    fn hash_verify_and_bad_hashes() {
        let mut mem = Vec::new();
        let h = hash("hunter2-long", &cheap(), &mut mem).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{h}");
        assert!(verify("hunter2-long", &h, &mut mem).unwrap());
        assert!(!verify("hunter2-lonG", &h, &mut mem).unwrap());
        // Salted: the same password hashes differently.
        assert_ne!(h, hash("hunter2-long", &cheap(), &mut mem).unwrap());
        for bad in [
            "",
            "plain",
            "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=8,t=1$c2FsdHNhbHQ",
            "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=8,t=1,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(verify("x", bad, &mut mem).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_owasp_default_matches_the_reference_parameters() {
        // The server's defaults are the OWASP minimum: 19 MiB, 2 passes, 1 lane.
        let p = Params::new(19_456, 2, 1, Some(32)).unwrap();
        let mut mem = Vec::new();
        let h = hash("correct horse battery", &p, &mut mem).unwrap();
        assert!(h.contains("$m=19456,t=2,p=1$"));
        assert_eq!(mem.len(), 19_456, "one 1 KiB block per KiB");
        assert!(verify("correct horse battery", &h, &mut mem).unwrap());
    }

    #[test]
    fn a_full_queue_answers_busy_and_counts() {
        // No worker takes jobs: the queue of 2 fills and the third job is refused at once.
        let stalled = Hasher::spawn(8, 1, 0, 2).unwrap();
        let job = || Job::Hash {
            password: "password".into(),
        };
        let _a = stalled.submit(job()).unwrap();
        let _b = stalled.submit(job()).unwrap();
        assert!(matches!(stalled.submit(job()), Err(Busy)));
        assert!(matches!(stalled.submit(job()), Err(Busy)));
        assert_eq!(stalled.stats.busy.load(Ordering::Relaxed), 2);
        assert_eq!(stalled.stats.in_flight.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn workers_run_every_kind_of_job() {
        let pool = Hasher::start(8, 1, 2, 8).unwrap();
        let tickets: Vec<HashTicket> = (0..8)
            .map(|i| {
                pool.submit(Job::Hash {
                    password: format!("password-{i}"),
                })
                .unwrap()
            })
            .collect();
        for t in tickets {
            assert!(matches!(t.wait(), Outcome::Hashed(_)));
        }
        // Change: wrong old password → None; right one → a new hash.
        let h = match pool
            .submit(Job::Hash {
                password: "first-pass".into(),
            })
            .unwrap()
            .wait()
        {
            Outcome::Hashed(h) => h,
            o => panic!("{o:?}"),
        };
        let wrong = pool
            .submit(Job::Change {
                old: "nope-nope".into(),
                phc: h.clone(),
                new: "second-pass".into(),
            })
            .unwrap()
            .wait();
        assert_eq!(wrong, Outcome::Changed(None));
        let right = pool
            .submit(Job::Change {
                old: "first-pass".into(),
                phc: h,
                new: "second-pass".into(),
            })
            .unwrap()
            .wait();
        let Outcome::Changed(Some(h2)) = right else {
            panic!("{right:?}")
        };
        assert_eq!(
            pool.submit(Job::Verify {
                password: "second-pass".into(),
                phc: h2
            })
            .unwrap()
            .wait(),
            Outcome::Verified(true)
        );
    }
}

//! Counters of the account component per shard, and of the process-wide hash pool.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use lattice_runtime::telemetry::prom::{Kind, Writer};

use super::hasher::HashStats;

lattice_runtime::shard_counters! {
    /// Account traffic of one shard.
    pub struct AccountMetrics("lattice_account") {
        registrations_total: Counter, "Accounts registered (journaled and acknowledged).";
        logins_total: Counter, "Successful password logins.";
        token_logins_total: Counter, "Successful session-token logins.";
        login_failures_total: Counter, "Password logins refused: unknown account or wrong password.";
        token_failures_total: Counter, "Token logins refused: invalid, expired or revoked token.";
        limit_violations_total: Counter, "Requests refused by a length or character rule.";
        hash_busy_total: Counter, "Requests answered BUSY because the hash pool's queue was full (account.hash_queue).";
        deferred_busy_total: Counter, "Logins answered BUSY because account.max_deferred_logins logins already waited for the registration of that account name.";
        online_full_total: Counter, "Logins answered BUSY because account.max_online_per_shard players were online.";
        account_locks_total: Counter, "Account names locked after account.account_lock_failures failures (names without an account included).";
        ip_locks_total: Counter, "IP addresses locked after account.ip_lock_failures failures.";
        locked_refusals_total: Counter, "Logins refused because the account or the address was locked.";
        lock_evictions_total: Counter, "Lock-out entries dropped because a table was full (account.lock_table_max).";
        lock_table_full_total: Counter, "Failed logins of a new account name or address not remembered because its lock-out table (account.lock_table_max) held only locked entries.";
        kicked_total: Counter, "Sessions closed because their account logged in on another session.";
        password_changes_total: Counter, "Passwords changed (older tokens revoked).";
        nickname_changes_total: Counter, "Nicknames changed (journaled and acknowledged).";
        logouts_total: Counter, "Logouts.";
        store_errors_total: Counter, "Requests that failed because storage refused or lost a read or a mark (answered BUSY or INTERNAL).";
        ids_unavailable_total: Counter, "Registrations refused because no unique id could be issued (lease unconfirmed).";
        online: Gauge, "Logged-in players whose accounts this shard owns.";
    }
}

fn all() -> &'static [AccountMetrics] {
    static ALL: OnceLock<Vec<AccountMetrics>> = OnceLock::new();
    ALL.get_or_init(|| (0..256).map(|_| AccountMetrics::default()).collect())
}

/// The counters of `shard`.
pub fn of(shard: usize) -> &'static AccountMetrics {
    let a = all();
    &a[shard.min(a.len() - 1)]
}

static POOL: OnceLock<std::sync::Arc<HashStats>> = OnceLock::new();

/// Registers the hash pool's counters for rendering (the first pool wins).
pub fn set_pool(stats: std::sync::Arc<HashStats>) {
    let _ = POOL.set(stats);
}

/// Renders the first `shards` shards' counters and the pool's.
pub fn render(shards: usize, w: &mut Writer<'_>) {
    let a = all();
    AccountMetrics::render(&a[..shards.min(a.len())], w);
    if let Some(p) = POOL.get() {
        w.single(
            "lattice_account_hash_jobs_total",
            Kind::Counter,
            "Argon2id jobs finished by the hash pool (hash, verify, or verify + hash).",
            p.jobs.load(Ordering::Relaxed),
        );
        w.single(
            "lattice_account_hash_busy_seconds_total",
            Kind::Counter,
            "Seconds the hash workers spent hashing (divide by jobs for the cost of one).",
            p.busy_us.load(Ordering::Relaxed) as f64 / 1e6,
        );
        w.single(
            "lattice_account_hash_in_flight",
            Kind::Gauge,
            "Hash jobs queued or running.",
            p.in_flight.load(Ordering::Relaxed),
        );
        w.single(
            "lattice_account_hash_refused_total",
            Kind::Counter,
            "Hash jobs refused because the queue was full (all shards).",
            p.busy.load(Ordering::Relaxed),
        );
    }
}

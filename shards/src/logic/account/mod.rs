//! Accounts and player profiles: `Register`, `Login`, `TokenLogin`, `ChangePassword`,
//! `ChangeNickname`, `Logout` (docs/PROTOCOL.md, "Accounts").
//!
//! Who does what (one writer per row, no shared state between shards):
//!
//! - The **owner shard** of an account (`owner_key(name) % shards`; the key is derived from the
//!   canonical name with a stable hash and carried in session tokens) holds its rows while it is
//!   logged in or has writes in flight, verifies passwords and tokens, writes the rows, binds the
//!   account to a session, and kicks an older session of the same account.
//! - The **session's shard** keeps which of its sessions are logged in, so later requests of a
//!   session are routed straight to the owner, and reads the session's peer address.
//! - The **IP shard** of an address (`hash(ip) % shards`) keeps that address's lock-out count.
//!
//! A password login goes session shard → IP shard (refused there when the address is locked) →
//! owner shard (refused when the account is locked; hash checked on the worker pool) and the owner
//! tells the IP shard about failures. `Register` and `TokenLogin` go straight to the owner;
//! `ChangePassword`, `ChangeNickname` and `Logout` go to the owner of the session's account.
//!
//! Every change is marked through write-behind and answered only once its journal ticket
//! completed ([`Ctx::then`]): an acknowledged change survives `kill -9`. Password hashing runs on
//! the bounded pool of [`hasher`] (BUSY past its queue); a token login costs an HMAC and at most
//! two row loads.
//!
//! Files: `config.rs` + `account.toml` (settings), `limits.rs` (length and character rules),
//! `hasher.rs` (Argon2id pool), `token.rs` (HMAC session tokens), `lockout.rs` (failure windows),
//! `store.rs` (tables and rows), `secret.rs` (the token key file), `metrics.rs` (counters).

pub mod config;
pub mod hasher;
pub mod limits;
pub mod lockout;
pub mod metrics;
pub mod secret;
pub mod store;
pub mod token;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use lattice_proto::{error_code as ec, pb, AnyMessage};
use lattice_storage::{LoadTicket, MarkTicket, StorageError, StorageHandle, Value};
use lattice_wire::SessionId;

use super::LOGIC;
use crate::component;
use crate::service::{Boundary, Component, Crossed, Ctx, Registrar, Req, Route};
use config::AccountConfig;
use hasher::{Hasher, Job, Outcome};
use lockout::{Failure, LockRule, Lockouts};
use metrics::AccountMetrics;
use store::{AccountRow, ProfileRow};
use token::{Claims, TokenKey};

/// Stable 32-bit key of a canonical account name (FNV-1a 64, folded): which shard owns the
/// account, for any shard count. Never change it: tokens carry it.
pub fn owner_key(canonical: &str) -> u32 {
    let h = fnv64(canonical.as_bytes());
    (h ^ (h >> 32)) as u32
}

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn ip_key(ip: &IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v) => fnv64(&v.octets()),
        IpAddr::V6(v) => fnv64(&v.octets()),
    }
}

/// Timer tokens of this component.
const PURGE_TIMER: u64 = 1;
const SWEEP_TIMER: u64 = 2;
/// Lock-out tables are purged this often.
const PURGE_EVERY: Duration = Duration::from_secs(10);
/// The game-day streak sweep marks at most this many online profiles per tick, one tick every
/// [`SWEEP_EVERY`], so a new day with many players online never floods the storage queue.
const SWEEP_BATCH: usize = 1000;
const SWEEP_EVERY: Duration = Duration::from_millis(10);

/// A request's identity, carried through continuations.
#[derive(Debug, Clone, Copy)]
struct Origin {
    session: SessionId,
    rid: u32,
    op: u16,
}

impl Origin {
    fn of<T>(r: &Req<T>) -> Self {
        Origin {
            session: r.session,
            rid: r.request_id,
            op: r.opcode,
        }
    }
}

/// A password login on its way from the session's shard to the owner. No `Debug`: it holds the
/// password.
struct LoginReq {
    from: Origin,
    ip: IpAddr,
    key: String,
    password: String,
    /// Looked at the name again once after it was not found (a `Register` of it may have been
    /// queued behind this login).
    rechecked: bool,
}

/// Messages between this component's instances on different shards.
enum Msg {
    /// Session shard → IP shard.
    AtIp(LoginReq),
    /// IP shard → owner shard.
    AtOwner(LoginReq),
    /// Owner → IP shard: a failed password login from this address.
    IpFailure(IpAddr),
    /// Owner → session shard: the session is logged in as `user_id`.
    Bind { session: SessionId, owner_key: u32 },
    /// Owner → session shard: the session logged out.
    Unbind(SessionId),
    /// Session shard → owner: a `Bind` found the session closed (it closed while its login was
    /// on the way): the owner lets the account go.
    Gone(SessionId),
}

/// A logged-in session, kept on the session's shard.
#[derive(Debug, Clone, Copy)]
struct Binding {
    owner_key: u32,
}

/// An account held by its owner shard.
struct User {
    key: String,
    account: AccountRow,
    profile: ProfileRow,
    session: Option<SessionId>,
    /// Marks of this user in flight (the entry stays until they are journaled).
    pending: u32,
    /// A password change is in flight.
    changing_password: bool,
}

/// The account component (one per shard).
pub struct Account {
    cfg: AccountConfig,
    shards: usize,
    hasher: Option<&'static Hasher>,
    key: TokenKey,
    m: &'static AccountMetrics,
    /// Logged-in sessions of this shard.
    bound: HashMap<SessionId, Binding>,
    /// Accounts this shard owns that are online or have writes in flight.
    users: HashMap<u64, User>,
    /// Canonical name → user id, for the accounts in `users`.
    names: HashMap<String, u64>,
    /// Session → user id, for the online accounts in `users`.
    sessions: HashMap<SessionId, u64>,
    /// Names whose registration is in flight.
    reserving: HashSet<String>,
    /// Password logins of names in `reserving`, run when that registration ends (a `Login`
    /// pipelined behind the `Register` of its account); at most `account.max_deferred_logins` per name.
    deferred_logins: HashMap<String, Vec<LoginReq>>,
    account_locks: Lockouts<String>,
    ip_locks: Lockouts<IpAddr>,
    warns: std::cell::RefCell<lattice_runtime::telemetry::warn_limit::WarnLimiter>,
    /// Online users whose streak the new game day still has to count.
    sweep: VecDeque<u64>,
    sweep_armed: bool,
}

component!(ACCOUNT, service = LOGIC, order = 5, ty = Account);

impl Component for Account {
    type Config = AccountConfig;
    const SECTION: &'static str = "account";
    const DEFAULTS: &'static str = include_str!("account.toml");

    fn new(cfg: AccountConfig, shard: usize, shards: usize) -> Self {
        let hasher = match Hasher::global(
            cfg.hash_memory_kib,
            cfg.hash_passes,
            cfg.workers(),
            cfg.hash_queue,
        ) {
            Ok(h) => {
                metrics::set_pool(h.stats.clone());
                Some(h)
            }
            Err(e) => {
                tracing::error!(error = %e, "account: password hashing unavailable");
                None
            }
        };
        let key = TokenKey::from_hex(&cfg.token_secret).unwrap_or_else(|| {
            // Only hosts built without `lattice run` (unit tests) get here: the server resolves
            // the key before it builds components.
            TokenKey::random().expect("OS randomness for an ephemeral token key")
        });
        let lock = |failures, window_ms, lock_ms| LockRule {
            failures,
            window_ms,
            lock_ms,
            max: cfg.lock_table_max,
        };
        Account {
            account_locks: Lockouts::new(lock(
                cfg.account_lock_failures,
                cfg.account_lock_window_ms,
                cfg.account_lock_ms,
            )),
            ip_locks: Lockouts::new(lock(
                cfg.ip_lock_failures,
                cfg.ip_lock_window_ms,
                cfg.ip_lock_ms,
            )),
            warns: std::cell::RefCell::new(
                lattice_runtime::telemetry::warn_limit::WarnLimiter::from_defaults(),
            ),
            cfg,
            shards: shards.max(1),
            hasher,
            key,
            m: metrics::of(shard),
            bound: HashMap::new(),
            users: HashMap::new(),
            names: HashMap::new(),
            sessions: HashMap::new(),
            reserving: HashSet::new(),
            deferred_logins: HashMap::new(),
            sweep: VecDeque::new(),
            sweep_armed: false,
        }
    }

    fn register(reg: &mut Registrar<Self>) {
        reg.on::<pb::Register>(Account::register);
        reg.on::<pb::Login>(Account::login);
        reg.on::<pb::TokenLogin>(Account::token_login);
        reg.on::<pb::ChangePassword>(Account::change_password);
        reg.on::<pb::ChangeNickname>(Account::change_nickname);
        reg.on::<pb::Logout>(Account::logout);
    }

    fn route(&self, msg: &AnyMessage, session: SessionId) -> Route {
        let owner = |k: u32| Route::Hash(u64::from(k));
        match msg {
            AnyMessage::Register(r) => limits::account(&self.cfg, &r.account)
                .map_or(Route::Local, |k| owner(owner_key(&k))),
            // The session's shard first: it knows whether the session is logged in and its peer.
            AnyMessage::Login(_) => Route::Local,
            AnyMessage::TokenLogin(t) if !self.bound.contains_key(&session) => {
                token::peek(&t.session_token).map_or(Route::Local, |c| owner(c.owner_key))
            }
            AnyMessage::ChangePassword(_)
            | AnyMessage::ChangeNickname(_)
            | AnyMessage::Logout(_) => self
                .bound
                .get(&session)
                .map_or(Route::Local, |b| owner(b.owner_key)),
            _ => Route::Local,
        }
    }

    fn start(&mut self, ctx: &mut Ctx<'_>) {
        if let Err(e) = ctx.timer_every(PURGE_EVERY, PURGE_TIMER) {
            tracing::error!(error = %e, "account: no purge timer; lock-out tables rely on their bound");
        }
    }

    fn stop(&mut self, _ctx: &mut Ctx<'_>) {
        // Storage failures a warning window still held back are summarised before the shard ends.
        self.warns.borrow_mut().flush();
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, token: u64) {
        match token {
            PURGE_TIMER => {
                let now = ctx.now_ms();
                self.account_locks.purge(now);
                self.ip_locks.purge(now);
            }
            SWEEP_TIMER => {
                self.sweep_armed = false;
                self.sweep_streaks(ctx);
            }
            _ => {}
        }
    }

    fn on_calendar(&mut self, ctx: &mut Ctx<'_>, event: &Crossed) {
        if event.boundary != Boundary::Day {
            return;
        }
        // A player online across the reset logged in on the new day too.
        self.sweep = self
            .users
            .iter()
            .filter(|(_, u)| u.session.is_some())
            .map(|(id, _)| *id)
            .collect();
        self.sweep_streaks(ctx);
    }

    fn on_session_closed(&mut self, _ctx: &mut Ctx<'_>, session: SessionId) {
        self.bound.remove(&session);
        if let Some(uid) = self.sessions.remove(&session) {
            if let Some(u) = self.users.get_mut(&uid) {
                if u.session == Some(session) {
                    u.session = None;
                }
            }
            self.maybe_evict(uid);
        }
    }

    fn on_internal(
        &mut self,
        ctx: &mut Ctx<'_>,
        payload: Box<dyn std::any::Any + Send>,
    ) -> Option<Box<dyn std::any::Any + Send>> {
        let msg = match payload.downcast::<Msg>() {
            Ok(m) => *m,
            Err(other) => return Some(other),
        };
        match msg {
            Msg::AtIp(r) => self.login_at_ip(ctx, r),
            Msg::AtOwner(r) => self.login_at_owner(ctx, r),
            Msg::IpFailure(ip) => self.ip_failure(ctx, ip),
            Msg::Bind { session, owner_key } => {
                // The session may have closed on the way: only bind live sessions of this shard,
                // and tell the owner of a closed one (its close notice may have passed the login:
                // the account would stay online, its slot taken, until it logs in again).
                if ctx.peer(session).is_some() {
                    self.bound.insert(session, Binding { owner_key });
                } else {
                    let owner = self.owner_shard(owner_key);
                    ctx.send_peer(owner, Box::new(Msg::Gone(session)));
                }
            }
            Msg::Gone(session) => self.on_session_closed(ctx, session),
            Msg::Unbind(session) => {
                self.bound.remove(&session);
            }
        }
        None
    }
}

/// Errors of storage calls, as answers.
fn store_code(e: &StorageError) -> (u32, &'static str) {
    match e {
        StorageError::Backpressure(_) => (ec::BUSY, "storage busy, retry later"),
        _ => (ec::INTERNAL, "storage unavailable"),
    }
}

impl Account {
    fn err(&self, ctx: &mut Ctx<'_>, f: Origin, code: u32, msg: &str) {
        ctx.error(f.session, f.rid, f.op, code, msg);
    }

    fn store_err(&self, ctx: &mut Ctx<'_>, f: Origin, e: &StorageError) {
        AccountMetrics::add(&self.m.store_errors_total, 1);
        // Once per request while storage refuses (an outage): counted, logged at most
        // `log.warn_burst` per window.
        self.warns
            .borrow_mut()
            .warn("account_storage_failed", ctx.now_ms(), || {
                tracing::warn!(session = %f.session, opcode = f.op, error = %e, "account: storage call failed");
            });
        let (code, msg) = store_code(e);
        self.err(ctx, f, code, msg);
    }

    fn violation(&self, ctx: &mut Ctx<'_>, f: Origin, v: limits::Violation) {
        AccountMetrics::add(&self.m.limit_violations_total, 1);
        self.err(ctx, f, v.code, &v.message);
    }

    fn storage<'a>(&self, ctx: &Ctx<'a>) -> Option<&'a StorageHandle> {
        ctx.storage()
    }

    fn owner_shard(&self, owner_key: u32) -> usize {
        (u64::from(owner_key) % self.shards as u64) as usize
    }

    fn ip_shard(&self, ip: &IpAddr) -> usize {
        (ip_key(ip) % self.shards as u64) as usize
    }

    fn hasher(&self, ctx: &mut Ctx<'_>, f: Origin, job: Job) -> Option<hasher::HashTicket> {
        let Some(h) = self.hasher else {
            self.err(ctx, f, ec::INTERNAL, "password hashing unavailable");
            return None;
        };
        match h.submit(job) {
            Ok(t) => Some(t),
            Err(hasher::Busy) => {
                AccountMetrics::add(&self.m.hash_busy_total, 1);
                self.err(ctx, f, ec::BUSY, "password hashing busy, retry later");
                None
            }
        }
    }

    fn load(&self, ctx: &mut Ctx<'_>, f: Origin, table: &str, key: Value) -> Option<LoadTicket> {
        let Some(st) = self.storage(ctx) else {
            self.err(ctx, f, ec::INTERNAL, "no storage");
            return None;
        };
        let r = st
            .table(table)
            .ok_or(StorageError::Closed)
            .and_then(|t| st.load(t, vec![key]));
        match r {
            Ok(t) => Some(t),
            Err(e) => {
                self.store_err(ctx, f, &e);
                None
            }
        }
    }

    fn mark(
        ctx: &Ctx<'_>,
        table: &str,
        key: Vec<Value>,
        values: Vec<Value>,
    ) -> Result<MarkTicket, StorageError> {
        let st = ctx.storage().ok_or(StorageError::Closed)?;
        let t = st.table(table).ok_or(StorageError::Closed)?;
        st.insert(t, key, values)
    }

    fn maybe_evict(&mut self, uid: u64) {
        let gone = self
            .users
            .get(&uid)
            .is_some_and(|u| u.session.is_none() && u.pending == 0 && !u.changing_password);
        if gone {
            if let Some(u) = self.users.remove(&uid) {
                self.names.remove(&u.key);
            }
        }
        AccountMetrics::set(&self.m.online, self.sessions.len() as u64);
    }

    // ---- Register (owner shard) ----

    fn register(&mut self, ctx: &mut Ctx<'_>, req: Req<pb::Register>) {
        let f = Origin::of(&req);
        let r = req.msg;
        let key = match limits::account(&self.cfg, &r.account) {
            Ok(k) => k,
            Err(v) => return self.violation(ctx, f, v),
        };
        if let Err(v) = limits::password(&self.cfg, &r.password)
            .and_then(|()| limits::nickname(&self.cfg, &r.nickname))
        {
            return self.violation(ctx, f, v);
        }
        if self.reserving.contains(&key) || self.names.contains_key(&key) {
            return self.err(ctx, f, ec::ACCOUNT_EXISTS, "account name is taken");
        }
        let Some(ticket) = self.load(ctx, f, store::NAMES, Value::Text(key.clone())) else {
            return;
        };
        self.reserving.insert(key.clone());
        let pending = PendingRegister {
            f,
            key,
            name: r.account,
            password: r.password,
            nickname: r.nickname,
        };
        ctx.then(
            async move { (ticket.await, pending) },
            Account::register_checked,
        );
    }

    fn register_checked(
        &mut self,
        ctx: &mut Ctx<'_>,
        (found, p): (Result<Option<Vec<Value>>, StorageError>, PendingRegister),
    ) {
        match found {
            Ok(None) => {}
            Ok(Some(_)) => {
                self.unreserve(ctx, &p.key);
                return self.err(ctx, p.f, ec::ACCOUNT_EXISTS, "account name is taken");
            }
            Err(e) => {
                self.unreserve(ctx, &p.key);
                return self.store_err(ctx, p.f, &e);
            }
        }
        let Some(t) = self.hasher(
            ctx,
            p.f,
            Job::Hash {
                password: p.password.clone(),
            },
        ) else {
            self.unreserve(ctx, &p.key);
            return;
        };
        ctx.then(async move { (t.await, p) }, Account::register_hashed);
    }

    fn register_hashed(&mut self, ctx: &mut Ctx<'_>, (out, p): (Outcome, PendingRegister)) {
        let phc = match out {
            Outcome::Hashed(h) => h,
            other => {
                self.unreserve(ctx, &p.key);
                tracing::error!(outcome = ?other, "account: hashing failed");
                return self.err(ctx, p.f, ec::INTERNAL, "password hashing failed");
            }
        };
        let id = match ctx.next_id() {
            Ok(id) => id.as_u64(),
            Err(e) => {
                self.unreserve(ctx, &p.key);
                AccountMetrics::add(&self.m.ids_unavailable_total, 1);
                tracing::warn!(error = %e, "account: no id for a registration");
                let lost = matches!(
                    e,
                    crate::center::ids::IdError::LeaseUnconfirmed { ceiling_ms: 0, .. }
                );
                return self.err(
                    ctx,
                    p.f,
                    ec::IDS_UNAVAILABLE,
                    if lost {
                        "no unique id available on this node: its machine-id lease is lost until it restarts; try another node or later"
                    } else {
                        "no unique id available now, retry later"
                    },
                );
            }
        };
        let now = ctx.now_ms();
        let account = AccountRow {
            user_id: id,
            name: p.name.clone(),
            pw_hash: phc,
            token_gen: 0,
            created_ms: now,
        };
        let profile = ProfileRow {
            user_id: id,
            nickname: p.nickname.clone(),
            created_ms: now,
            last_login_ms: 0,
            login_streak: 0,
            last_day: 0,
        };
        // Account, then profile, then the name: a crash keeps a prefix of the journal, so a name
        // never points to a missing account.
        let marks = Account::mark(ctx, store::ACCOUNTS, account.key(), account.values())
            .and_then(|a| {
                Account::mark(ctx, store::PROFILES, profile.key(), profile.values()).map(|b| (a, b))
            })
            .and_then(|(a, b)| {
                Account::mark(
                    ctx,
                    store::NAMES,
                    vec![Value::Text(p.key.clone())],
                    vec![Value::Int(id as i64)],
                )
                .map(|c| (a, b, c))
            });
        let (a, b, c) = match marks {
            Ok(t) => t,
            Err(e) => {
                self.unreserve(ctx, &p.key);
                return self.store_err(ctx, p.f, &e);
            }
        };
        self.names.insert(p.key.clone(), id);
        self.users.insert(
            id,
            User {
                key: p.key.clone(),
                account,
                profile,
                session: None,
                pending: 1,
                changing_password: false,
            },
        );
        ctx.then(
            async move {
                let r = match (a.await, b.await, c.await) {
                    (Ok(_), Ok(_), Ok(_)) => Ok(()),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
                };
                (r, p, id)
            },
            Account::register_saved,
        );
    }

    fn register_saved(
        &mut self,
        ctx: &mut Ctx<'_>,
        (r, p, id): (Result<(), StorageError>, PendingRegister, u64),
    ) {
        if let Some(u) = self.users.get_mut(&id) {
            u.pending -= 1;
        }
        match r {
            Ok(()) => {
                AccountMetrics::add(&self.m.registrations_total, 1);
                tracing::info!(user_id = id, "account registered");
                ctx.reply(p.f.session, p.f.rid, &pb::RegisterOk { user_id: id });
                self.maybe_evict(id);
            }
            Err(e) => {
                // Not journaled: the account does not exist (a later registration may take the name).
                self.names.remove(&p.key);
                self.users.remove(&id);
                self.store_err(ctx, p.f, &e);
            }
        }
        // Last: logins that waited see the outcome (the account, or no such name).
        self.unreserve(ctx, &p.key);
    }

    // ---- Login: session shard → IP shard → owner shard ----

    fn login(&mut self, ctx: &mut Ctx<'_>, req: Req<pb::Login>) {
        let f = Origin::of(&req);
        if self.bound.contains_key(&f.session) {
            return self.err(
                ctx,
                f,
                ec::ALREADY_LOGGED_IN,
                "already logged in; Logout first",
            );
        }
        let key = match limits::account(&self.cfg, &req.msg.account) {
            Ok(k) => k,
            Err(v) => return self.violation(ctx, f, v),
        };
        if req.msg.password.len() > self.cfg.password_max_len {
            return self.violation(
                ctx,
                f,
                limits::Violation {
                    code: ec::PASSWORD_TOO_LONG,
                    message: format!("password takes at most {} bytes", self.cfg.password_max_len),
                },
            );
        }
        let Some(peer) = ctx.peer(f.session) else {
            return; // the session closed
        };
        let r = LoginReq {
            from: f,
            ip: peer.ip().to_canonical(),
            key,
            password: req.msg.password,
            rechecked: false,
        };
        ctx.send_peer(self.ip_shard(&r.ip), Box::new(Msg::AtIp(r)));
    }

    fn login_at_ip(&mut self, ctx: &mut Ctx<'_>, r: LoginReq) {
        if let Some(left) = self.ip_locks.locked(&r.ip, ctx.now_ms()) {
            AccountMetrics::add(&self.m.locked_refusals_total, 1);
            return self.err(
                ctx,
                r.from,
                ec::IP_LOCKED,
                &format!(
                    "too many failed logins from this address; retry in {} s",
                    left.div_ceil(1000)
                ),
            );
        }
        let dst = self.owner_shard(owner_key(&r.key));
        ctx.send_peer(dst, Box::new(Msg::AtOwner(r)));
    }

    fn ip_failure(&mut self, ctx: &mut Ctx<'_>, ip: IpAddr) {
        if lock_failure(&mut self.ip_locks, self.m, &ip, ctx.now_ms()) == Failure::Locked {
            AccountMetrics::add(&self.m.ip_locks_total, 1);
            tracing::warn!(%ip, "account: address locked after repeated failed logins");
        }
    }

    /// The registration of `key` ended (created or not): logins that waited for it run now.
    fn unreserve(&mut self, ctx: &mut Ctx<'_>, key: &str) {
        self.reserving.remove(key);
        if let Some(waiting) = self.deferred_logins.remove(key) {
            for r in waiting {
                self.login_at_owner(ctx, r);
            }
        }
    }

    /// Answers `ACCOUNT_LOCKED` if `key` is locked now. Checked when a login arrives and again
    /// when its password check comes back: logins pipelined or sent side by side wait in the
    /// hash pool together, and those that come back after the lock engaged are refused whatever
    /// their password, so a burst learns no more than the failures that locked the name.
    fn refused_as_locked(&mut self, ctx: &mut Ctx<'_>, f: Origin, key: &str) -> bool {
        let Some(left) = self.account_locks.locked(key, ctx.now_ms()) else {
            return false;
        };
        AccountMetrics::add(&self.m.locked_refusals_total, 1);
        self.err(
            ctx,
            f,
            ec::ACCOUNT_LOCKED,
            &format!(
                "too many failed logins for this account; retry in {} s",
                left.div_ceil(1000)
            ),
        );
        true
    }

    fn login_at_owner(&mut self, ctx: &mut Ctx<'_>, r: LoginReq) {
        let f = r.from;
        if self.refused_as_locked(ctx, f, &r.key) {
            return;
        }
        if self.reserving.contains(&r.key) {
            // Its registration is in flight: the login runs once that ends (not a failure).
            let q = self.deferred_logins.entry(r.key.clone()).or_default();
            if q.len() >= self.cfg.max_deferred_logins {
                AccountMetrics::add(&self.m.deferred_busy_total, 1);
                return self.err(ctx, f, ec::BUSY, "account being registered, retry later");
            }
            q.push(r);
            return;
        }
        if let Some(&uid) = self.names.get(&r.key) {
            let phc = self.users[&uid].account.pw_hash.clone();
            return self.verify(ctx, r, uid, phc);
        }
        let Some(t) = self.load(ctx, f, store::NAMES, Value::Text(r.key.clone())) else {
            return;
        };
        ctx.then(async move { (t.await, r) }, Account::login_name_loaded);
    }

    fn login_name_loaded(
        &mut self,
        ctx: &mut Ctx<'_>,
        (found, r): (Result<Option<Vec<Value>>, StorageError>, LoginReq),
    ) {
        let uid = match found {
            Ok(Some(v)) => match v.first().and_then(Value::as_i64) {
                Some(id) => id as u64,
                None => return self.err(ctx, r.from, ec::INTERNAL, "malformed account row"),
            },
            Ok(None) => return self.login_unknown(ctx, r),
            Err(e) => return self.store_err(ctx, r.from, &e),
        };
        if let Some(u) = self.users.get(&uid) {
            let phc = u.account.pw_hash.clone();
            return self.verify(ctx, r, uid, phc);
        }
        let Some(t) = self.load(ctx, r.from, store::ACCOUNTS, Value::Int(uid as i64)) else {
            return;
        };
        ctx.then(
            async move { (t.await, r, uid) },
            Account::login_account_loaded,
        );
    }

    fn login_account_loaded(
        &mut self,
        ctx: &mut Ctx<'_>,
        (found, r, uid): (Result<Option<Vec<Value>>, StorageError>, LoginReq, u64),
    ) {
        let row = match found {
            Ok(Some(v)) => match AccountRow::from_values(uid, &v) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(user_id = uid, error = %e, "account: bad row");
                    return self.err(ctx, r.from, ec::INTERNAL, "malformed account row");
                }
            },
            // A name without its account cannot be written (see store.rs); treat it as unknown.
            Ok(None) => return self.login_unknown(ctx, r),
            Err(e) => return self.store_err(ctx, r.from, &e),
        };
        let phc = self
            .users
            .get(&uid)
            .map_or(row.pw_hash.clone(), |u| u.account.pw_hash.clone());
        self.verify_then(ctx, r, uid, phc, Some(row));
    }

    fn verify(&mut self, ctx: &mut Ctx<'_>, r: LoginReq, uid: u64, phc: String) {
        self.verify_then(ctx, r, uid, phc, None)
    }

    fn verify_then(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut r: LoginReq,
        uid: u64,
        phc: String,
        row: Option<AccountRow>,
    ) {
        let password = std::mem::take(&mut r.password);
        let Some(t) = self.hasher(ctx, r.from, Job::Verify { password, phc }) else {
            return;
        };
        ctx.then(
            async move { (t.await, r, uid, row) },
            Account::login_verified,
        );
    }

    fn login_verified(
        &mut self,
        ctx: &mut Ctx<'_>,
        (out, r, uid, row): (Outcome, LoginReq, u64, Option<AccountRow>),
    ) {
        match out {
            Outcome::Verified(true) => {
                if self.refused_as_locked(ctx, r.from, &r.key) {
                    return;
                }
            }
            Outcome::Verified(false) => return self.login_failed(ctx, &r),
            other => {
                tracing::error!(user_id = uid, outcome = ?other, "account: cannot verify the stored hash");
                return self.err(ctx, r.from, ec::INTERNAL, "cannot check the password");
            }
        }
        self.account_locks.success(&r.key, ctx.now_ms());
        AccountMetrics::add(&self.m.logins_total, 1);
        let owner = owner_key(&r.key);
        self.fetch_and_login(ctx, r.from, uid, owner, row, None);
    }

    /// A login for an account name that does not exist: refused exactly like a wrong password —
    /// after the same Argon2 work (against a decoy hash) and counted towards the name's lock-out —
    /// so that neither the answer, its delay nor a lock tells whether the account exists.
    fn login_unknown(&mut self, ctx: &mut Ctx<'_>, mut r: LoginReq) {
        let Some(h) = self.hasher else {
            return self.err(ctx, r.from, ec::INTERNAL, "password hashing unavailable");
        };
        let phc = hasher::decoy_phc(h.params());
        let password = if r.rechecked {
            std::mem::take(&mut r.password)
        } else {
            r.password.clone()
        };
        let Some(t) = self.hasher(ctx, r.from, Job::Verify { password, phc }) else {
            return;
        };
        ctx.then(async move { (t.await, r) }, Account::login_unknown_checked);
    }

    fn login_unknown_checked(&mut self, ctx: &mut Ctx<'_>, (_, mut r): (Outcome, LoginReq)) {
        // A `Register` of this name pipelined before the login may have reached this shard after
        // it (requests and the login's hops travel different queues): look once more.
        if !r.rechecked && (self.reserving.contains(&r.key) || self.names.contains_key(&r.key)) {
            r.rechecked = true;
            return self.login_at_owner(ctx, r);
        }
        self.login_failed(ctx, &r)
    }

    /// A failed password login: counted for the account name (whether or not it exists) and the
    /// address.
    fn login_failed(&mut self, ctx: &mut Ctx<'_>, r: &LoginReq) {
        AccountMetrics::add(&self.m.login_failures_total, 1);
        // The address still counts this failure; the name, locked while this check waited,
        // answers as locked (no further failure is recorded against it).
        if self.account_locks.locked(&r.key, ctx.now_ms()).is_some() {
            ctx.send_peer(self.ip_shard(&r.ip), Box::new(Msg::IpFailure(r.ip)));
            self.refused_as_locked(ctx, r.from, &r.key);
            return;
        }
        if lock_failure(&mut self.account_locks, self.m, &r.key, ctx.now_ms()) == Failure::Locked {
            AccountMetrics::add(&self.m.account_locks_total, 1);
            tracing::warn!(account = %r.key, "account: locked after repeated failed logins");
        }
        ctx.send_peer(self.ip_shard(&r.ip), Box::new(Msg::IpFailure(r.ip)));
        self.err(
            ctx,
            r.from,
            ec::WRONG_CREDENTIALS,
            "wrong account name or password",
        );
    }

    // ---- TokenLogin (owner shard) ----

    fn token_login(&mut self, ctx: &mut Ctx<'_>, req: Req<pb::TokenLogin>) {
        let f = Origin::of(&req);
        if self.bound.contains_key(&f.session) {
            return self.err(
                ctx,
                f,
                ec::ALREADY_LOGGED_IN,
                "already logged in; Logout first",
            );
        }
        let c = match self.key.verify(&req.msg.session_token, ctx.now_ms()) {
            Ok(c) => c,
            Err(e) => {
                AccountMetrics::add(&self.m.token_failures_total, 1);
                let code = match e {
                    token::TokenError::Invalid => ec::TOKEN_INVALID,
                    token::TokenError::Expired => ec::TOKEN_EXPIRED,
                };
                return self.err(ctx, f, code, &e.to_string());
            }
        };
        if self.owner_shard(c.owner_key) != ctx.shard() {
            // Only a token whose owner key routes elsewhere gets here (it was routed locally
            // because the session is logged in elsewhere in the meantime): refuse plainly.
            return self.err(ctx, f, ec::TOKEN_INVALID, "token not for this shard");
        }
        if self.users.contains_key(&c.user_id) {
            return self.fetch_and_login(ctx, f, c.user_id, c.owner_key, None, Some(c.generation));
        }
        let Some(t) = self.load(ctx, f, store::ACCOUNTS, Value::Int(c.user_id as i64)) else {
            return;
        };
        ctx.then(
            async move { (t.await, f, c) },
            Account::token_account_loaded,
        );
    }

    fn token_account_loaded(
        &mut self,
        ctx: &mut Ctx<'_>,
        (found, f, c): (Result<Option<Vec<Value>>, StorageError>, Origin, Claims),
    ) {
        let row = match found {
            Ok(Some(v)) => match AccountRow::from_values(c.user_id, &v) {
                Ok(a) => a,
                Err(_) => return self.err(ctx, f, ec::INTERNAL, "malformed account row"),
            },
            Ok(None) => {
                AccountMetrics::add(&self.m.token_failures_total, 1);
                return self.err(ctx, f, ec::TOKEN_INVALID, "no such account");
            }
            Err(e) => return self.store_err(ctx, f, &e),
        };
        self.fetch_and_login(
            ctx,
            f,
            c.user_id,
            c.owner_key,
            Some(row),
            Some(c.generation),
        );
    }

    /// Loads what is missing of the user (account row, profile) and completes the login.
    /// `token_gen`: for a token login, the generation the token carries (checked against the
    /// freshest account row).
    fn fetch_and_login(
        &mut self,
        ctx: &mut Ctx<'_>,
        f: Origin,
        uid: u64,
        owner: u32,
        row: Option<AccountRow>,
        token_gen: Option<u32>,
    ) {
        if self.users.contains_key(&uid) {
            return self.complete_login(ctx, f, uid, owner, None, token_gen);
        }
        let Some(row) = row else {
            // Cached a moment ago and evicted since: load again.
            let Some(t) = self.load(ctx, f, store::ACCOUNTS, Value::Int(uid as i64)) else {
                return;
            };
            return ctx.then(
                async move { (t.await, f, uid, owner, token_gen) },
                |me: &mut Account, ctx, (found, f, uid, owner, gen)| match found {
                    Ok(Some(v)) => match AccountRow::from_values(uid, &v) {
                        Ok(a) => me.fetch_and_login(ctx, f, uid, owner, Some(a), gen),
                        Err(_) => me.err(ctx, f, ec::INTERNAL, "malformed account row"),
                    },
                    Ok(None) => me.err(ctx, f, ec::TOKEN_INVALID, "no such account"),
                    Err(e) => me.store_err(ctx, f, &e),
                },
            );
        };
        let Some(t) = self.load(ctx, f, store::PROFILES, Value::Int(uid as i64)) else {
            return;
        };
        ctx.then(
            async move { (t.await, f, owner, row, token_gen) },
            |me: &mut Account, ctx, (found, f, owner, row, gen)| {
                let profile = match found {
                    Ok(Some(v)) => match ProfileRow::from_values(row.user_id, &v) {
                        Ok(p) => p,
                        Err(_) => return me.err(ctx, f, ec::INTERNAL, "malformed profile row"),
                    },
                    Ok(None) => {
                        tracing::error!(user_id = row.user_id, "account: profile row missing");
                        return me.err(ctx, f, ec::INTERNAL, "profile missing");
                    }
                    Err(e) => return me.store_err(ctx, f, &e),
                };
                me.complete_login(ctx, f, row.user_id, owner, Some((row, profile)), gen);
            },
        );
    }

    /// Binds the session to the account (kicking an older session), counts the game day, marks
    /// the profile, and answers `LoginOk` once that mark is journaled.
    fn complete_login(
        &mut self,
        ctx: &mut Ctx<'_>,
        f: Origin,
        uid: u64,
        owner: u32,
        loaded: Option<(AccountRow, ProfileRow)>,
        token_gen: Option<u32>,
    ) {
        if !self.users.contains_key(&uid) {
            let Some((account, profile)) = loaded else {
                return self.err(ctx, f, ec::INTERNAL, "account vanished");
            };
            if self.users.len() >= self.cfg.max_online_per_shard {
                AccountMetrics::add(&self.m.online_full_total, 1);
                return self.err(ctx, f, ec::BUSY, "server full, retry later");
            }
            let key = account.name.to_ascii_lowercase();
            self.names.insert(key.clone(), uid);
            self.users.insert(
                uid,
                User {
                    key,
                    account,
                    profile,
                    session: None,
                    pending: 0,
                    changing_password: false,
                },
            );
        }
        let u = self.users.get_mut(&uid).expect("inserted above");
        if let Some(gen) = token_gen {
            if gen != u.account.token_gen {
                AccountMetrics::add(&self.m.token_failures_total, 1);
                self.maybe_evict(uid);
                return self.err(
                    ctx,
                    f,
                    ec::TOKEN_REVOKED,
                    "token revoked by a password change",
                );
            }
            AccountMetrics::add(&self.m.token_logins_total, 1);
        }
        // A session of this shard that closed while its login was on the way replaces nobody.
        if f.session.shard() == ctx.shard() && ctx.peer(f.session).is_none() {
            self.maybe_evict(uid);
            return;
        }
        // A session logged in as another account of this shard (a second login pipelined behind
        // the first) stays with the first.
        if self
            .sessions
            .get(&f.session)
            .is_some_and(|&other| other != uid)
        {
            self.maybe_evict(uid);
            return self.err(
                ctx,
                f,
                ec::ALREADY_LOGGED_IN,
                "already logged in; Logout first",
            );
        }
        let u = self.users.get_mut(&uid).expect("present");
        // The newest login wins: an older session of this account is told why and closed.
        if let Some(old) = u.session.filter(|s| *s != f.session) {
            AccountMetrics::add(&self.m.kicked_total, 1);
            tracing::info!(user_id = uid, old = %old, new = %f.session, "account: logged in elsewhere; closing the older session");
            ctx.push(
                old,
                &pb::Kicked {
                    code: ec::LOGGED_IN_ELSEWHERE,
                    message: "logged in on another session".into(),
                },
            );
            ctx.close_keeping_replay(old, "account logged in elsewhere");
            self.sessions.remove(&old);
            if old.shard() != ctx.shard() {
                ctx.send_peer(old.shard(), Box::new(Msg::Unbind(old)));
            } else {
                self.bound.remove(&old);
            }
        }
        u.session = Some(f.session);
        self.sessions.insert(f.session, uid);
        let now = ctx.now_ms();
        u.profile.last_login_ms = now;
        if let Some(day) = ctx.game_day() {
            u.profile.count_day(day);
        }
        let (pkey, pvals) = (u.profile.key(), u.profile.values());
        let mark = Account::mark(ctx, store::PROFILES, pkey, pvals);
        let t = match mark {
            Ok(t) => t,
            Err(e) => {
                let u = self.users.get_mut(&uid).expect("present");
                u.session = None;
                self.sessions.remove(&f.session);
                self.maybe_evict(uid);
                return self.store_err(ctx, f, &e);
            }
        };
        u.pending += 1;
        self.maybe_evict(uid);
        ctx.then(
            async move { (t.await, f, uid, owner) },
            Account::login_saved,
        );
    }

    fn login_saved(
        &mut self,
        ctx: &mut Ctx<'_>,
        (r, f, uid, owner): (
            Result<lattice_storage::MarkAck, StorageError>,
            Origin,
            u64,
            u32,
        ),
    ) {
        let Some(u) = self.users.get_mut(&uid) else {
            return;
        };
        u.pending -= 1;
        let still_mine = u.session == Some(f.session);
        if let Err(e) = r {
            if still_mine {
                u.session = None;
                self.sessions.remove(&f.session);
            }
            self.maybe_evict(uid);
            return self.store_err(ctx, f, &e);
        }
        if !still_mine {
            // Closed or replaced while the profile was being journaled: nobody to answer.
            self.maybe_evict(uid);
            return;
        }
        let expires = ctx.now_ms().saturating_add(self.cfg.token_ttl_ms);
        let token = self.key.sign(&Claims {
            user_id: uid,
            owner_key: owner,
            expires_ms: expires,
            generation: u.account.token_gen,
        });
        let profile = u.profile.to_pb();
        // Bind on the session's shard before the answer: both travel on the same ring, so the
        // client's next request finds the session logged in.
        if f.session.shard() == ctx.shard() {
            if ctx.peer(f.session).is_none() {
                // Closed while its login was on the way.
                return self.on_session_closed(ctx, f.session);
            }
            self.bound.insert(f.session, Binding { owner_key: owner });
        } else {
            ctx.send_peer(
                f.session.shard(),
                Box::new(Msg::Bind {
                    session: f.session,
                    owner_key: owner,
                }),
            );
        }
        ctx.reply(
            f.session,
            f.rid,
            &pb::LoginOk {
                user_id: uid,
                session_token: token,
                token_expires_ms: expires,
                profile: Some(profile),
            },
        );
        self.maybe_evict(uid);
    }

    // ---- Requests of a logged-in session (owner shard) ----

    /// The user the session is logged in as, on this (owner) shard; answers NOT_LOGGED_IN
    /// otherwise.
    fn user_of(&self, ctx: &mut Ctx<'_>, f: Origin) -> Option<u64> {
        let uid = self.sessions.get(&f.session).copied();
        if uid.is_none() {
            self.err(ctx, f, ec::NOT_LOGGED_IN, "log in first");
        }
        uid
    }

    fn change_nickname(&mut self, ctx: &mut Ctx<'_>, req: Req<pb::ChangeNickname>) {
        let f = Origin::of(&req);
        let Some(uid) = self.user_of(ctx, f) else {
            return;
        };
        if let Err(v) = limits::nickname(&self.cfg, &req.msg.nickname) {
            return self.violation(ctx, f, v);
        }
        let u = self.users.get_mut(&uid).expect("sessions point into users");
        let before = std::mem::replace(&mut u.profile.nickname, req.msg.nickname.clone());
        match Account::mark(ctx, store::PROFILES, u.profile.key(), u.profile.values()) {
            Ok(t) => {
                u.pending += 1;
                let nick = req.msg.nickname;
                ctx.then(
                    async move { (t.await, f, uid, nick) },
                    |me: &mut Account, ctx, (r, f, uid, nick)| {
                        if let Some(u) = me.users.get_mut(&uid) {
                            u.pending -= 1;
                        }
                        match r {
                            Ok(_) => {
                                AccountMetrics::add(&me.m.nickname_changes_total, 1);
                                ctx.reply(
                                    f.session,
                                    f.rid,
                                    &pb::NicknameChanged { nickname: nick },
                                );
                            }
                            Err(e) => me.store_err(ctx, f, &e),
                        }
                        me.maybe_evict(uid);
                    },
                );
            }
            Err(e) => {
                u.profile.nickname = before;
                self.store_err(ctx, f, &e);
            }
        }
    }

    fn change_password(&mut self, ctx: &mut Ctx<'_>, req: Req<pb::ChangePassword>) {
        let f = Origin::of(&req);
        let Some(uid) = self.user_of(ctx, f) else {
            return;
        };
        if let Err(v) = limits::password(&self.cfg, &req.msg.new_password) {
            return self.violation(ctx, f, v);
        }
        let u = &self.users[&uid];
        if u.changing_password {
            return self.err(ctx, f, ec::BUSY, "a password change is in progress");
        }
        if let Some(left) = self.account_locks.locked(&u.key, ctx.now_ms()) {
            AccountMetrics::add(&self.m.locked_refusals_total, 1);
            return self.err(
                ctx,
                f,
                ec::ACCOUNT_LOCKED,
                &format!(
                    "too many failed attempts; retry in {} s",
                    left.div_ceil(1000)
                ),
            );
        }
        let job = Job::Change {
            old: req.msg.old_password,
            phc: u.account.pw_hash.clone(),
            new: req.msg.new_password,
        };
        let Some(t) = self.hasher(ctx, f, job) else {
            return;
        };
        self.users.get_mut(&uid).expect("present").changing_password = true;
        ctx.then(async move { (t.await, f, uid) }, Account::password_hashed);
    }

    fn password_hashed(&mut self, ctx: &mut Ctx<'_>, (out, f, uid): (Outcome, Origin, u64)) {
        let Some(u) = self.users.get_mut(&uid) else {
            return;
        };
        // In progress until answered: a second change read before the answer gets BUSY, not a
        // check against the new password.
        let phc = match out {
            Outcome::Changed(Some(phc)) => phc,
            Outcome::Changed(None) => {
                u.changing_password = false;
                let key = u.key.clone();
                if lock_failure(&mut self.account_locks, self.m, &key, ctx.now_ms())
                    == Failure::Locked
                {
                    AccountMetrics::add(&self.m.account_locks_total, 1);
                }
                self.maybe_evict(uid);
                return self.err(ctx, f, ec::WRONG_CREDENTIALS, "wrong current password");
            }
            other => {
                u.changing_password = false;
                tracing::error!(user_id = uid, outcome = ?other, "account: password change failed");
                self.maybe_evict(uid);
                return self.err(ctx, f, ec::INTERNAL, "password change failed");
            }
        };
        let mut next = u.account.clone();
        next.pw_hash = phc;
        next.token_gen = next.token_gen.wrapping_add(1);
        match Account::mark(ctx, store::ACCOUNTS, next.key(), next.values()) {
            Ok(t) => {
                let owner = owner_key(&u.key);
                let generation = next.token_gen;
                u.account = next;
                u.pending += 1;
                ctx.then(
                    async move { (t.await, f, uid, owner, generation) },
                    |me: &mut Account, ctx, (r, f, uid, owner, generation)| {
                        if let Some(u) = me.users.get_mut(&uid) {
                            u.pending -= 1;
                            u.changing_password = false;
                        }
                        match r {
                            Ok(_) => {
                                AccountMetrics::add(&me.m.password_changes_total, 1);
                                let expires = ctx.now_ms().saturating_add(me.cfg.token_ttl_ms);
                                let token = me.key.sign(&Claims {
                                    user_id: uid,
                                    owner_key: owner,
                                    expires_ms: expires,
                                    generation,
                                });
                                ctx.reply(
                                    f.session,
                                    f.rid,
                                    &pb::PasswordChanged {
                                        session_token: token,
                                        token_expires_ms: expires,
                                    },
                                );
                            }
                            Err(e) => me.store_err(ctx, f, &e),
                        }
                        me.maybe_evict(uid);
                    },
                );
            }
            Err(e) => {
                u.changing_password = false;
                self.maybe_evict(uid);
                self.store_err(ctx, f, &e);
            }
        }
    }

    fn logout(&mut self, ctx: &mut Ctx<'_>, req: Req<pb::Logout>) {
        let f = Origin::of(&req);
        let Some(uid) = self.user_of(ctx, f) else {
            return;
        };
        self.sessions.remove(&f.session);
        if let Some(u) = self.users.get_mut(&uid) {
            u.session = None;
        }
        if f.session.shard() == ctx.shard() {
            self.bound.remove(&f.session);
        } else {
            ctx.send_peer(f.session.shard(), Box::new(Msg::Unbind(f.session)));
        }
        AccountMetrics::add(&self.m.logouts_total, 1);
        ctx.reply(f.session, f.rid, &pb::LoggedOut {});
        self.maybe_evict(uid);
    }

    // ---- New game day: the streak of players online across the reset ----

    fn sweep_streaks(&mut self, ctx: &mut Ctx<'_>) {
        let Some(day) = ctx.game_day() else {
            self.sweep.clear();
            return;
        };
        for _ in 0..SWEEP_BATCH {
            let Some(uid) = self.sweep.pop_front() else {
                return;
            };
            let Some(u) = self.users.get_mut(&uid) else {
                continue;
            };
            let Some(session) = u.session else {
                continue;
            };
            let before = u.profile.clone();
            if !u.profile.count_day(day) {
                continue;
            }
            match Account::mark(ctx, store::PROFILES, u.profile.key(), u.profile.values()) {
                Ok(t) => {
                    u.pending += 1;
                    let profile = u.profile.to_pb();
                    ctx.then(
                        async move { (t.await, uid, session, profile) },
                        |me: &mut Account, ctx, (r, uid, session, profile)| {
                            if let Some(u) = me.users.get_mut(&uid) {
                                u.pending -= 1;
                            }
                            match r {
                                Ok(_) => ctx.push(
                                    session,
                                    &pb::ProfileChanged {
                                        profile: Some(profile),
                                    },
                                ),
                                Err(e) => {
                                    AccountMetrics::add(&me.m.store_errors_total, 1);
                                    tracing::warn!(user_id = uid, error = %e, "account: streak not saved");
                                }
                            }
                            me.maybe_evict(uid);
                        },
                    );
                }
                Err(_) => {
                    // Storage is full: undo, retry this user on the next tick.
                    u.profile = before;
                    self.sweep.push_front(uid);
                    break;
                }
            }
        }
        if !self.sweep.is_empty() && !self.sweep_armed {
            self.sweep_armed = ctx.timer_after(SWEEP_EVERY, SWEEP_TIMER).is_ok();
        }
    }
}

/// A registration between its continuations. No `Debug`: it holds the password.
struct PendingRegister {
    f: Origin,
    key: String,
    name: String,
    password: String,
    nickname: String,
}

/// Records a failure in a lock-out table and counts what making room for it did.
fn lock_failure<K: std::hash::Hash + Eq + Clone>(
    table: &mut Lockouts<K>,
    m: &AccountMetrics,
    key: &K,
    now: u64,
) -> Failure {
    let f = table.failure(key, now);
    let (evicted, untracked) = table.take_counts();
    AccountMetrics::add(&m.lock_evictions_total, evicted);
    AccountMetrics::add(&m.lock_table_full_total, untracked);
    f
}

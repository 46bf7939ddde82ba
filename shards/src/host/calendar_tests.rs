//! Calendar events through the service host on simulated time: catch-up at start after downtime,
//! the next boundary's timer, and the login streak of a player online across the game-day reset
//! (the real account component, real storage, a manual clock).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{TimeZone, Utc};
use lattice_proto::{pb, AnyMessage, LatticeMessage};
use lattice_runtime::time::{Boundary, Clock, LastFired, ManualTime};
use lattice_runtime::ShardCx;
use lattice_storage::{Storage, StorageConfig, Value};
use lattice_wire::compress::BodyCompressor;
use lattice_wire::FrameHeader;

use super::*;
use crate::service::calendar::{CalendarDriver, CalendarSection};
use crate::service::registry::{build_service, ServiceDecl};
use crate::service::{Component, Crossed, Registrar};

thread_local! {
    static SEEN: RefCell<Vec<(Boundary, u64)>> = const { RefCell::new(Vec::new()) };
}

struct Listener;

impl Component for Listener {
    type Config = toml::Table;
    const SECTION: &'static str = "listener_test";
    const DEFAULTS: &'static str = "";
    fn new(_: toml::Table, _: usize, _: usize) -> Self {
        Listener
    }
    fn register(_: &mut Registrar<Self>) {}
    fn on_calendar(&mut self, _: &mut Ctx<'_>, e: &Crossed) {
        SEEN.with(|s| s.borrow_mut().push((e.boundary, e.count)));
    }
}

static CAL_SERVICE: ServiceDecl = ServiceDecl {
    name: "calendar_test",
    defaults: "",
};
crate::component!(LISTENER_C, service = CAL_SERVICE, order = 1, ty = Listener);

fn shanghai() -> CalendarSection {
    CalendarSection {
        time_zone: "Asia/Shanghai".into(),
        reset_hour: 5,
        first_weekday: "mon".into(),
    }
}

fn net() -> lattice_runtime::net::NetConfig {
    crate::config::Config::load(None, vec![], vec![])
        .unwrap()
        .net
}

/// A standalone shard context on a manual clock that reads `start` now.
fn sim_cx(start: SystemTime) -> (ShardCx<ShardMsg>, ManualTime) {
    let (clock, manual) = Clock::manual(start);
    let cx = ShardCx::standalone_with_clock(0, 1, net(), clock);
    cx.refresh_clock();
    (cx, manual)
}

fn parts_with(
    cal: CalendarDriver,
    storage: Option<lattice_storage::StorageHandle>,
    ids: crate::center::ids::IdGen,
) -> Parts {
    Parts {
        enc: Encoder::new(BodyCompressor::new(Default::default()), 1 << 20),
        timers: TimerTable::default(),
        storage,
        metrics: Arc::new(vec![AppMetrics::default()]),
        shard: 0,
        ids,
        calendar: Some(cal),
        id_metrics: crate::center::id_metrics(0),
    }
}

#[test]
fn catch_up_at_start_then_each_boundary_once() {
    // Sunday 2026-03-01 12:00 in Shanghai (04:00 UTC); the server was last up on Thursday.
    let start: SystemTime = Utc.with_ymd_and_hms(2026, 3, 1, 4, 0, 0).unwrap().into();
    let thursday = Utc.with_ymd_and_hms(2026, 2, 25, 21, 0, 0).unwrap(); // Thu 05:00 local
    let mut last = LastFired::default();
    for k in Boundary::ALL {
        last.set(k, thursday);
    }
    let (cx, manual) = sim_cx(start);
    let cal = CalendarDriver::new(shanghai().calendar().unwrap(), last, start).unwrap();
    let table: toml::Table = "[calendar_test]\nqueue_limit = 8\nbatch = 4\n[listener_test]\n"
        .parse()
        .unwrap();
    let services = vec![build_service(&CAL_SERVICE, &table, 0, 1).unwrap()];
    let mut host = ServiceHost::with_services(
        services,
        parts_with(cal, None, crate::center::ids::IdGen::none(0)),
    )
    .unwrap();
    SEEN.with(|s| s.borrow_mut().clear());
    host.start(&cx);
    // Friday's, Saturday's and Sunday's resets were missed, and Sunday is 1 March: one Day event
    // counting 3 and one Month event, each once.
    assert_eq!(
        SEEN.with(|s| s.take()),
        [(Boundary::Day, 3), (Boundary::Month, 1)]
    );
    // The timer is set for Monday 05:00 local, 17 h away; moving the clock there fires Day and
    // Week, once.
    let timer = host.calendar_timer.expect("next boundary scheduled");
    manual.advance(Duration::from_secs(17 * 3600) + Duration::from_millis(1));
    cx.refresh_clock();
    host.timer(&cx, timer.0);
    assert_eq!(
        SEEN.with(|s| s.take()),
        [(Boundary::Day, 1), (Boundary::Week, 1)]
    );
    // A stale firing of the same timer does nothing; the next one is a day later.
    host.timer(&cx, timer.0);
    assert!(SEEN.with(|s| s.take()).is_empty());
    let next = host.calendar_timer.expect("rescheduled");
    assert_ne!(next, timer);
    manual.advance(Duration::from_secs(24 * 3600));
    cx.refresh_clock();
    host.timer(&cx, next.0);
    assert_eq!(SEEN.with(|s| s.take()), [(Boundary::Day, 1)]);
}

#[test]
fn lua_calendar_hooks_fire_with_the_components() {
    let dir = std::env::temp_dir().join(format!("lattice-lua-cal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cal.lua"),
        r#"days = 0
           months = 0
           lattice.on_calendar("day", function(ev) days = days + 1 end)
           lattice.on_calendar("month", function(ev) months = months + 1 end)"#,
    )
    .unwrap();
    let scripts = crate::lua::Scripts::open(
        &crate::lua::LuaConfig {
            dir: dir.display().to_string(),
            memory_limit: 16 << 20,
            instruction_budget: 1_000_000,
        },
        1,
        &[],
        &toml::Table::new(),
    )
    .unwrap()
    .expect("scripts loaded");
    // As above: Sunday 1 March, last up on Thursday → one Day (count 3) and one Month event.
    let start: SystemTime = Utc.with_ymd_and_hms(2026, 3, 1, 4, 0, 0).unwrap().into();
    let thursday = Utc.with_ymd_and_hms(2026, 2, 25, 21, 0, 0).unwrap();
    let mut last = LastFired::default();
    for k in Boundary::ALL {
        last.set(k, thursday);
    }
    let (cx, manual) = sim_cx(start);
    let cal = CalendarDriver::new(shanghai().calendar().unwrap(), last, start).unwrap();
    let table: toml::Table = "[calendar_test]\nqueue_limit = 8\nbatch = 4\n[listener_test]\n"
        .parse()
        .unwrap();
    let services = vec![build_service(&CAL_SERVICE, &table, 0, 1).unwrap()];
    let mut host = ServiceHost::with_services(
        services,
        parts_with(cal, None, crate::center::ids::IdGen::none(0)),
    )
    .unwrap();
    host.set_lua(crate::lua::LuaShard::new(scripts, 0));
    SEEN.with(|s| s.borrow_mut().clear());
    host.start(&cx);
    let lua = host.lua().unwrap();
    assert_eq!(
        (lua.global_i64("days"), lua.global_i64("months")),
        (Some(1), Some(1))
    );
    // Monday's reset: Day and Week; the script hooks only Day.
    let timer = host.calendar_timer.expect("next boundary scheduled");
    manual.advance(Duration::from_secs(17 * 3600) + Duration::from_millis(1));
    cx.refresh_clock();
    host.timer(&cx, timer.0);
    let lua = host.lua().unwrap();
    assert_eq!(
        (lua.global_i64("days"), lua.global_i64("months")),
        (Some(2), Some(1))
    );
    SEEN.with(|s| s.borrow_mut().clear());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Frames queued for `cell`'s session, decoded.
fn drain(cell: &lattice_runtime::net::SessionCell) -> Vec<(u32, AnyMessage)> {
    let mut s = cell.session.borrow_mut();
    let b = s.binding();
    let bytes = s.transmit(b).to_vec();
    s.transmitted(b, bytes.len());
    let mut out = Vec::new();
    let mut b = &bytes[..];
    while b.len() >= 12 {
        let len = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
        let op = u16::from_le_bytes(b[4..6].try_into().unwrap());
        let rid = u32::from_le_bytes(b[8..12].try_into().unwrap());
        out.push((rid, lattice_proto::decode(op, &b[12..len]).unwrap()));
        b = &b[len..];
    }
    out
}

fn request<T: LatticeMessage>(
    host: &mut ServiceHost,
    cx: &ShardCx<ShardMsg>,
    session: lattice_wire::SessionId,
    rid: u32,
    msg: T,
) {
    let info = lattice_proto::info(T::OPCODE).unwrap();
    let h = FrameHeader {
        length: 12,
        opcode: T::OPCODE,
        flags: 0,
        request_id: rid,
        seq: 0,
        ack: 0,
    };
    host.request(cx, session, h, info, msg.into());
}

/// Runs continuations until a frame with request id `rid` is queued for `cell` (bounded), and
/// returns it; other frames stay in `got`.
async fn wait_reply(
    host: &mut ServiceHost,
    cx: &ShardCx<ShardMsg>,
    cell: &lattice_runtime::net::SessionCell,
    got: &mut Vec<(u32, AnyMessage)>,
    rid: u32,
) -> AnyMessage {
    for _ in 0..20_000 {
        while let Some(m) = cx.take_message() {
            host.message(cx, m);
        }
        host.run_queued(cx, 64);
        got.extend(drain(cell));
        if let Some(i) = got.iter().position(|(r, _)| *r == rid) {
            return got.remove(i).1;
        }
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("no frame {rid} within 20 s; got {got:?}");
}

#[test]
fn a_player_online_across_the_reset_gets_the_next_day_of_streak() {
    let dir = std::env::temp_dir().join(format!("lattice-streak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = Storage::open(
        StorageConfig {
            data_dir: dir.clone(),
            ..StorageConfig::default()
        },
        crate::server::schema(),
    )
    .unwrap();
    // Tuesday 2026-03-03 20:00 in Shanghai; the reset is at 05:00 local, 9 h later.
    let start: SystemTime = Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap().into();
    let (cx, manual) = sim_cx(start);
    let cal =
        CalendarDriver::new(shanghai().calendar().unwrap(), LastFired::default(), start).unwrap();
    let now_ms = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ids = crate::center::ids::IdGen::with_ceiling(1, 0, now_ms - 1, u64::MAX >> 1);
    let table = crate::config::Config::load(None, vec![], vec![])
        .unwrap()
        .table;
    let services = vec![build_service(&crate::logic::LOGIC, &table, 0, 1).unwrap()];
    let mut host =
        ServiceHost::with_services(services, parts_with(cal, Some(storage.handle()), ids)).unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        host.start(&cx);
        let cell = cx.open_session("127.0.0.1:40000".parse().unwrap());
        let s = cell.id();
        let mut got: Vec<(u32, AnyMessage)> = Vec::new();
        request(
            &mut host,
            &cx,
            s,
            1,
            pb::Register {
                account: "streaker".into(),
                password: "streak password".into(),
                nickname: "S".into(),
            },
        );
        let r = wait_reply(&mut host, &cx, &cell, &mut got, 1).await;
        let AnyMessage::RegisterOk(reg) = r else {
            panic!("{r:?}")
        };
        request(
            &mut host,
            &cx,
            s,
            2,
            pb::Login {
                account: "streaker".into(),
                password: "streak password".into(),
            },
        );
        let r = wait_reply(&mut host, &cx, &cell, &mut got, 2).await;
        let AnyMessage::LoginOk(ok) = r else {
            panic!("{r:?}")
        };
        assert_eq!(ok.profile.unwrap().login_streak, 1);
        // Past the reset: the calendar timer fires, the account component counts the new day
        // for the player still online, journals it, then pushes the new profile.
        let timer = host.calendar_timer.expect("calendar timer");
        manual.advance(Duration::from_secs(9 * 3600) + Duration::from_millis(5));
        cx.refresh_clock();
        host.timer(&cx, timer.0);
        let pushed = wait_reply(&mut host, &cx, &cell, &mut got, 0).await;
        let AnyMessage::ProfileChanged(p) = pushed else {
            panic!("{pushed:?}")
        };
        assert_eq!(p.profile.unwrap().login_streak, 2);
        // What was pushed was journaled: the stored profile says so.
        let h = storage.handle();
        let t = h.table(crate::logic::account::store::PROFILES).unwrap();
        let row = h
            .load(t, vec![Value::Int(reg.user_id as i64)])
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row[3], Value::Int(2));
    });
    storage.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

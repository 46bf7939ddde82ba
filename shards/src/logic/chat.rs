//! Chat rooms: `JoinRoom` and `Say` are routed to the shard that owns the room (hash of its name);
//! `Said` is broadcast to every member, whatever shard their session lives on.

use std::collections::HashMap;

use lattice_proto::{error_code, pb, AnyMessage};
use lattice_wire::SessionId;

use super::route_hash;
use super::LOGIC;
use crate::component;
use crate::metrics::AppMetrics;
use crate::service::{Component, Ctx, Registrar, Req, Route};

/// `[chat]` section.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// Rooms one shard holds; joining a new room beyond it is refused.
    pub max_rooms_per_shard: usize,
    /// Members one room holds.
    pub max_members: usize,
    /// Rooms of this shard one session may be in.
    pub max_rooms_per_session: usize,
    /// Longest room name in bytes.
    pub max_room_name: usize,
    /// Longest `Say.text` in bytes.
    pub max_text: usize,
}

/// The chat component: rooms owned by this shard.
pub struct Chat {
    cfg: ChatConfig,
    rooms: HashMap<String, Vec<SessionId>>,
    /// Rooms of this shard each session is in (to leave them when the session closes).
    joined: HashMap<SessionId, Vec<String>>,
}

component!(CHAT, service = LOGIC, order = 20, ty = Chat);

impl Component for Chat {
    type Config = ChatConfig;
    const SECTION: &'static str = "chat";
    const DEFAULTS: &'static str = include_str!("chat.toml");

    fn new(cfg: ChatConfig, _shard: usize, _shards: usize) -> Self {
        Chat {
            cfg,
            rooms: HashMap::new(),
            joined: HashMap::new(),
        }
    }

    fn register(reg: &mut Registrar<Self>) {
        reg.on::<pb::JoinRoom>(Chat::join);
        reg.on::<pb::Say>(Chat::say);
    }

    fn route(&self, msg: &AnyMessage, _session: SessionId) -> Route {
        match msg {
            AnyMessage::JoinRoom(j) => Route::Hash(route_hash(j.room.as_str())),
            AnyMessage::Say(s) => Route::Hash(route_hash(s.room.as_str())),
            _ => Route::Local,
        }
    }

    fn on_session_closed(&mut self, _ctx: &mut Ctx<'_>, session: SessionId) {
        let Some(rooms) = self.joined.remove(&session) else {
            return;
        };
        for room in rooms {
            if let Some(members) = self.rooms.get_mut(&room) {
                members.retain(|m| *m != session);
                if members.is_empty() {
                    self.rooms.remove(&room);
                }
            }
        }
    }
}

impl Chat {
    /// Room names are 1..=`chat.max_room_name` bytes without control or invisible characters
    /// (they come back to every member in `Joined` and `Said`), for `JoinRoom` and `Say` alike.
    /// The reason when not.
    fn room_name_error(&self, room: &str) -> Option<&'static str> {
        if room.is_empty() || room.len() > self.cfg.max_room_name {
            return Some("room name empty or too long");
        }
        if crate::text::hides_text(room) {
            return Some("room name has a control or invisible character");
        }
        None
    }

    fn join(&mut self, ctx: &mut Ctx<'_>, req: Req<pb::JoinRoom>) {
        let (s, rid, op) = (req.session, req.request_id, req.opcode);
        let room = req.msg.room;
        if let Some(why) = self.room_name_error(&room) {
            return ctx.error(s, rid, op, error_code::BAD_REQUEST, why);
        }
        let is_member = self.rooms.get(&room).is_some_and(|m| m.contains(&s));
        if !is_member {
            let full = if !self.rooms.contains_key(&room)
                && self.rooms.len() >= self.cfg.max_rooms_per_shard
            {
                Some((&ctx.metrics.chat_rooms_full_total, "too many rooms"))
            } else if self.rooms.get(&room).map_or(0, Vec::len) >= self.cfg.max_members {
                Some((&ctx.metrics.chat_room_full_total, "room full"))
            } else if self.joined.get(&s).map_or(0, Vec::len) >= self.cfg.max_rooms_per_session {
                Some((
                    &ctx.metrics.chat_session_rooms_full_total,
                    "in too many rooms",
                ))
            } else {
                None
            };
            if let Some((counter, why)) = full {
                AppMetrics::add(counter, 1);
                return ctx.error(s, rid, op, error_code::BUSY, why);
            }
            self.rooms.entry(room.clone()).or_default().push(s);
            self.joined.entry(s).or_default().push(room.clone());
        }
        let members = &self.rooms[&room];
        let joined = pb::Joined {
            members: members.len() as u32,
            room,
        };
        ctx.reply(s, rid, &joined);
    }

    fn say(&mut self, ctx: &mut Ctx<'_>, req: Req<pb::Say>) {
        let (s, rid, op) = (req.session, req.request_id, req.opcode);
        if let Some(why) = self.room_name_error(&req.msg.room) {
            return ctx.error(s, rid, op, error_code::BAD_REQUEST, why);
        }
        if req.msg.text.len() > self.cfg.max_text {
            return ctx.error(s, rid, op, error_code::BAD_REQUEST, "text too long");
        }
        let Some(members) = self.rooms.get(&req.msg.room) else {
            return ctx.error(
                s,
                rid,
                op,
                error_code::NOT_MEMBER,
                "not a member of this room",
            );
        };
        if !members.contains(&s) {
            return ctx.error(
                s,
                rid,
                op,
                error_code::NOT_MEMBER,
                "not a member of this room",
            );
        }
        let others: Vec<SessionId> = members.iter().copied().filter(|m| *m != s).collect();
        let said = pb::Said {
            room: req.msg.room,
            from: s.as_u64(),
            text: req.msg.text,
        };
        ctx.push_many(&others, &said);
        ctx.reply(s, rid, &said);
    }
}

//! The Lua state of one shard: the scripts loaded into a [`Sandbox`], the handlers they registered
//! by message name, their calendar hooks, and calls into them.
//!
//! Script API (globals):
//! - `lattice.on(name, fn)`: handle client requests of message `name` (e.g. `"Login"`); `fn(req,
//!   session)` gets the message as a table (bytes fields are arrays of integers) and the session id,
//!   and returns a reply as `name, table` (fields not given keep their defaults; a field the
//!   message does not have is an error), or nothing: no reply, which is an error (`NoReply`) when
//!   the request has a request id;
//! - `lattice.on_calendar(event, fn)`: called with the event's name when a calendar event fires;
//! - `lattice.log(text)`: one info line; `lattice.shard`, `lattice.shards`: where it runs;
//! - a global function `check_args(args, config)` (optional): called once at start-up with the
//!   command line and the merged configuration; returning `false, reason` (or a string) refuses
//!   to start.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use lattice_proto::AnyMessage;
use mlua::{Function, LuaSerdeExt, Value};

use super::sandbox::{Limits, Sandbox};

/// Why scripts could not be loaded or called.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// A Lua error (syntax, runtime, memory, budget).
    #[error("{0}")]
    Lua(#[from] mlua::Error),
    /// A script named a message that is not a client message.
    #[error("no client message is called {0:?}")]
    UnknownMessage(String),
    /// A script replied with a handshake message or a push ([`NOT_A_REPLY`]).
    #[error("{0} is not a reply a script may send (the handshake and the server's pushes are the server's)")]
    NotAReply(String),
    /// A handler returned no reply to a request that has a request id (its client waits for one).
    #[error("script returned no reply")]
    NoReply,
    /// A reply table had a field its message does not have.
    #[error("{msg} has no field {field:?}")]
    UnknownField {
        /// The message.
        msg: String,
        /// The field.
        field: String,
    },
}

#[derive(Default)]
struct Registered {
    handlers: HashMap<u16, Function>,
    calendar: HashMap<String, Function>,
}

/// One shard's scripts.
pub struct LuaHost {
    sb: Sandbox,
    reg: Rc<RefCell<Registered>>,
}

/// Client messages a script may not reply with: the handshake's (the gate sends `Welcome` and
/// `Resumed`), and the pushes the server sends on its own (`Kicked` comes right before the server
/// closes the connection; `ProfileChanged`, `IconManifest`). Server-internal messages are not
/// client messages at all.
pub const NOT_A_REPLY: [&str; 7] = [
    "Hello",
    "Resume",
    "Welcome",
    "Resumed",
    "Kicked",
    "ProfileChanged",
    "IconManifest",
];

/// The opcode of client message `name`, if there is one.
pub fn client_opcode(name: &str) -> Option<u16> {
    lattice_proto::all()
        .iter()
        .find(|i| i.name == name && !i.no_client)
        .map(|i| i.opcode)
}

/// Longest `lattice.log` text logged, in bytes; the rest is cut (marked `…`).
pub const MAX_LOG_TEXT: usize = 4096;

/// `lattice.log`'s text for one log line: control characters and the Unicode line and paragraph
/// separators (line breaks, which could forge log lines) shown as `\u{…}` escapes, cut to [`MAX_LOG_TEXT`] bytes.
pub(crate) fn log_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LOG_TEXT) + 3);
    for c in text.chars() {
        if out.len() >= MAX_LOG_TEXT {
            out.push('…');
            break;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

impl LuaHost {
    /// Loads `scripts` (name, source), in order, into a new sandbox for shard `shard` of `shards`.
    pub fn load(
        scripts: &[(String, String)],
        limits: Limits,
        shard: usize,
        shards: usize,
    ) -> Result<LuaHost, ScriptError> {
        let sb = Sandbox::new(limits)?;
        let reg = Rc::new(RefCell::new(Registered::default()));
        let lua = &sb.lua;
        let api = lua.create_table()?;
        let r = reg.clone();
        api.set(
            "on",
            lua.create_function(move |_, (name, f): (String, Function)| {
                let op = client_opcode(&name).ok_or_else(|| {
                    mlua::Error::runtime(format!(
                        "lattice.on: no client message is called {name:?}"
                    ))
                })?;
                if matches!(name.as_str(), "Hello" | "Resume") {
                    return Err(mlua::Error::runtime(format!(
                        "lattice.on: {name} is the handshake, which the gate answers: no script takes it"
                    )));
                }
                r.borrow_mut().handlers.insert(op, f);
                Ok(())
            })?,
        )?;
        let r = reg.clone();
        api.set(
            "on_calendar",
            lua.create_function(move |_, (event, f): (String, Function)| {
                if !matches!(event.as_str(), "day" | "week" | "month" | "year") {
                    return Err(mlua::Error::runtime(format!(
                        "lattice.on_calendar: no calendar event is called {event:?} (day, week, month or year)"
                    )));
                }
                r.borrow_mut().calendar.insert(event, f);
                Ok(())
            })?,
        )?;
        api.set(
            "log",
            lua.create_function(move |_, text: String| {
                tracing::info!(target: "lua", shard, "{}", log_text(&text));
                Ok(())
            })?,
        )?;
        api.set("shard", shard)?;
        api.set("shards", shards)?;
        lua.globals().set("lattice", api)?;
        for (name, src) in scripts {
            sb.exec(name, src)?;
        }
        Ok(LuaHost { sb, reg })
    }

    /// True when a script handles requests with this opcode.
    pub fn handles(&self, opcode: u16) -> bool {
        self.reg.borrow().handlers.contains_key(&opcode)
    }

    /// Names of the messages scripts handle.
    pub fn handled(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self
            .reg
            .borrow()
            .handlers
            .keys()
            .filter_map(|&op| lattice_proto::info(op).map(|i| i.name))
            .collect();
        v.sort_unstable();
        v
    }

    /// Bytes the state uses.
    pub fn used_memory(&self) -> usize {
        self.sb.used_memory()
    }

    /// Calls the handler of `msg` (one call, one budget). `Ok(None)`: no reply.
    pub fn handle(
        &self,
        msg: &AnyMessage,
        session: u64,
    ) -> Result<Option<AnyMessage>, ScriptError> {
        let Some(f) = self.reg.borrow().handlers.get(&msg.opcode()).cloned() else {
            return Ok(None);
        };
        let (name, reply): (Option<String>, Value) = self.sb.call(|lua| {
            let req = lua.to_value(msg)?;
            f.call((req, session))
        })?;
        let Some(name) = name else { return Ok(None) };
        self.to_message(&name, reply).map(Some)
    }

    /// An integer global, if set (for tests).
    #[cfg(test)]
    pub(crate) fn global_i64(&self, name: &str) -> Option<i64> {
        self.sb
            .lua
            .globals()
            .get::<Option<i64>>(name)
            .ok()
            .flatten()
    }

    /// Calls the hook of calendar event `event`, if a script set one. Returns whether one ran.
    pub fn calendar(&self, event: &str) -> Result<bool, ScriptError> {
        let Some(f) = self.reg.borrow().calendar.get(event).cloned() else {
            return Ok(false);
        };
        self.sb.call(|_| f.call::<()>(event))?;
        Ok(true)
    }

    /// Calls the global `check_args(args, config)` if defined: `Ok(None)` accepts, `Ok(Some(why))`
    /// refuses.
    pub fn check_args<C: serde::Serialize>(
        &self,
        args: &[String],
        config: &C,
    ) -> Result<Option<String>, ScriptError> {
        let f: Option<Function> = self.sb.lua.globals().get("check_args")?;
        let Some(f) = f else { return Ok(None) };
        let (ok, why): (Value, Option<String>) = self.sb.call(|lua| {
            let cfg = lua.to_value(config)?;
            f.call((args.to_vec(), cfg))
        })?;
        Ok(match ok {
            Value::Nil | Value::Boolean(true) => None,
            Value::String(s) => Some(s.to_str()?.to_string()),
            _ => Some(why.unwrap_or_else(|| "check_args refused the arguments".into())),
        })
    }

    /// A message `name` built from `fields` over its defaults.
    fn to_message(&self, name: &str, fields: Value) -> Result<AnyMessage, ScriptError> {
        if NOT_A_REPLY.contains(&name) {
            return Err(ScriptError::NotAReply(name.to_string()));
        }
        let op =
            client_opcode(name).ok_or_else(|| ScriptError::UnknownMessage(name.to_string()))?;
        let lua = &self.sb.lua;
        let base = lattice_proto::default_of(op).expect("registered opcode");
        let Value::Table(merged) = lua.to_value(&base)? else {
            return Err(ScriptError::UnknownMessage(name.to_string()));
        };
        match fields {
            Value::Nil => {}
            Value::Table(t) => {
                for pair in t.pairs::<Value, Value>() {
                    let (k, v) = pair?;
                    let key = match &k {
                        Value::String(s) => s.to_str()?.to_string(),
                        other => format!("{other:?}"),
                    };
                    if !merged.contains_key(key.as_str())? {
                        return Err(ScriptError::UnknownField {
                            msg: name.to_string(),
                            field: key,
                        });
                    }
                    merged.set(key, v)?;
                }
            }
            other => {
                return Err(ScriptError::Lua(mlua::Error::runtime(format!(
                    "the reply to send as {name} must be a table, got {}",
                    other.type_name()
                ))))
            }
        }
        // Arrays (bytes and repeated fields) end at their first `nil`, as OPERATIONS.md says:
        // Lua's length of a table with a hole may reach past it, and the hole failed the decode.
        let merged = if has_hole(&merged, 0)? {
            cut_at_holes(lua, &merged, 0)?
        } else {
            merged
        };
        let de = mlua::serde::Deserializer::new(Value::Table(merged));
        let msg = lattice_proto::deserialize_as(op, de)?
            .ok_or_else(|| ScriptError::UnknownMessage(name.to_string()))?;
        Ok(msg)
    }
}

/// How deep [`has_hole`] and [`cut_at_holes`] follow tables inside tables (a reply nested deeper,
/// or a table that holds itself, is an error).
const MAX_REPLY_DEPTH: usize = 32;

fn too_deep() -> mlua::Error {
    mlua::Error::runtime(format!(
        "the reply nests tables more than {MAX_REPLY_DEPTH} deep (or holds itself)"
    ))
}

/// Whether a table of the reply, at any depth, has a `nil` inside its length (a hole).
fn has_hole(t: &mlua::Table, depth: usize) -> mlua::Result<bool> {
    if depth > MAX_REPLY_DEPTH {
        return Err(too_deep());
    }
    let len = t.raw_len();
    for pair in t.pairs::<Value, Value>() {
        let (_, v) = pair?;
        if let Value::Table(inner) = v {
            if has_hole(&inner, depth + 1)? {
                return Ok(true);
            }
        }
    }
    for i in 1..=len {
        if t.raw_get::<Value>(i)?.is_nil() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A copy of a reply table whose arrays end at their first `nil`, at every depth (the script's own
/// tables are not changed).
fn cut_at_holes(lua: &mlua::Lua, t: &mlua::Table, depth: usize) -> mlua::Result<mlua::Table> {
    if depth > MAX_REPLY_DEPTH {
        return Err(too_deep());
    }
    let copy = |v: Value| -> mlua::Result<Value> {
        Ok(match v {
            Value::Table(inner) => Value::Table(cut_at_holes(lua, &inner, depth + 1)?),
            v => v,
        })
    };
    let out = lua.create_table()?;
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        if !matches!(k, Value::Integer(_)) {
            out.raw_set(k, copy(v)?)?;
        }
    }
    let mut i: i64 = 1;
    loop {
        let v: Value = t.raw_get(i)?;
        if v.is_nil() {
            break;
        }
        out.raw_set(i, copy(v)?)?;
        i += 1;
    }
    Ok(out)
}

/// Reads the table of handlers, for tests.
#[cfg(test)]
fn table_keys(t: &mlua::Table) -> Vec<String> {
    t.pairs::<String, Value>()
        .filter_map(|p| p.ok())
        .map(|p| p.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_proto::pb;

    fn limits() -> Limits {
        Limits {
            memory: 4 << 20,
            instructions: 1_000_000,
        }
    }

    fn host(src: &str) -> LuaHost {
        LuaHost::load(&[("t.lua".into(), src.into())], limits(), 0, 2).unwrap()
    }

    #[test]
    fn a_handler_by_message_name_replies_with_a_table() {
        let h = host(
            r#"lattice.on("Login", function(req, session)
                 if req.account == "bad" then error("refused") end
                 return "LoginOk", { user_id = #req.account * 100 + lattice.shard }
               end)"#,
        );
        assert_eq!(h.handled(), vec!["Login"]);
        let login = AnyMessage::Login(pb::Login {
            account: "alice".into(),
            password: "x".into(),
        });
        assert_eq!(
            h.handle(&login, 7).unwrap(),
            Some(AnyMessage::LoginOk(pb::LoginOk {
                user_id: 500,
                ..Default::default()
            }))
        );
        let bad = AnyMessage::Login(pb::Login {
            account: "bad".into(),
            password: String::new(),
        });
        assert!(h
            .handle(&bad, 7)
            .unwrap_err()
            .to_string()
            .contains("refused"));
    }

    #[test]
    fn a_bytes_table_ends_at_its_first_nil() {
        let h = host(
            r#"local kept = { 65, 66, nil, 68 }
               lattice.on("Ping", function(req)
                 local n = #req.payload
                 if n == 1 then return "Pong", { payload = kept } end
                 if n == 2 then return "Pong", { payload = { a = 1 } } end
                 if n == 3 then return "Pong", { payload = { nil, 66 } } end
                 -- the script's own table is left as it was
                 return "Pong", { payload = { #kept, kept[4] } }
               end)"#,
        );
        let ping = |n: usize| {
            AnyMessage::Ping(pb::Ping {
                payload: vec![0; n],
            })
        };
        let pong = |p: &[u8]| {
            Some(AnyMessage::Pong(pb::Pong {
                payload: p.to_vec(),
            }))
        };
        assert_eq!(h.handle(&ping(1), 1).unwrap(), pong(b"AB"));
        assert_eq!(h.handle(&ping(2), 1).unwrap(), pong(b""));
        assert_eq!(h.handle(&ping(3), 1).unwrap(), pong(b""));
        assert_eq!(h.handle(&ping(4), 1).unwrap(), pong(&[4, 68]));
    }

    #[test]
    fn bad_replies_and_names_are_errors() {
        assert!(LuaHost::load(
            &[(
                "t.lua".into(),
                r#"lattice.on("Nope", function() end)"#.into()
            )],
            limits(),
            0,
            1
        )
        .is_err());
        let h = host(r#"lattice.on("Ping", function() return "Pong", { nope = 1 } end)"#);
        let ping = AnyMessage::Ping(pb::Ping { payload: vec![1] });
        assert!(matches!(
            h.handle(&ping, 1),
            Err(ScriptError::UnknownField { .. })
        ));
        let h = host(
            r#"lattice.on("Ping", function(req) return "Pong", { payload = req.payload } end)"#,
        );
        assert_eq!(
            h.handle(&ping, 1).unwrap(),
            Some(AnyMessage::Pong(pb::Pong { payload: vec![1] }))
        );
        let h = host(r#"lattice.on("Ping", function() return "Nope", {} end)"#);
        assert!(matches!(
            h.handle(&ping, 1),
            Err(ScriptError::UnknownMessage(_))
        ));
        // Server-internal messages are no client message; the handshake and pushes are no reply.
        let h = host(r#"lattice.on("Ping", function() return "Relay", {} end)"#);
        assert!(matches!(
            h.handle(&ping, 1),
            Err(ScriptError::UnknownMessage(_))
        ));
        for name in NOT_A_REPLY {
            let h = host(&format!(
                r#"lattice.on("Ping", function() return "{name}", {{}} end)"#
            ));
            assert!(
                matches!(h.handle(&ping, 1), Err(ScriptError::NotAReply(_))),
                "{name}"
            );
        }
        // An error answer with a code of the script's choosing is a reply.
        let h = host(
            r#"lattice.on("Ping", function() return "Error", { code = 9, message = "busy" } end)"#,
        );
        assert!(matches!(h.handle(&ping, 1), Ok(Some(AnyMessage::Error(_)))));
    }

    #[test]
    fn handshake_messages_unknown_calendar_events_are_load_errors_and_logs_stay_one_line() {
        for src in [
            r#"lattice.on("Hello", function() end)"#,
            r#"lattice.on("Resume", function() end)"#,
            r#"lattice.on_calendar("fortnight", function() end)"#,
        ] {
            let e = LuaHost::load(&[("t.lua".into(), src.into())], limits(), 0, 1)
                .err()
                .unwrap_or_else(|| panic!("{src} loaded"));
            assert!(
                e.to_string().contains("handshake") || e.to_string().contains("fortnight"),
                "{e}"
            );
        }
        assert_eq!(
            log_text("a\nINFO forged\r\u{1b}[31m\u{2028}\u{2029}"),
            "a\\u{a}INFO forged\\u{d}\\u{1b}[31m\\u{2028}\\u{2029}"
        );
        let long = log_text(&"x".repeat(10 * MAX_LOG_TEXT));
        assert!(long.len() <= MAX_LOG_TEXT + 3 && long.ends_with('…'));
    }

    #[test]
    fn calendar_hooks_and_check_args() {
        let h = host(
            r#"fired = 0
               lattice.on_calendar("day", function(ev) fired = fired + 1 end)
               function check_args(args, config)
                 if config.net.max_frame < 4096 then return false, "net.max_frame too small for our game" end
                 for _, a in ipairs(args) do if a == "--forbidden" then return "no --forbidden" end end
                 return true
               end"#,
        );
        assert!(h.calendar("day").unwrap());
        assert!(!h.calendar("week").unwrap());
        let fired: i64 = h.sb.lua.globals().get("fired").unwrap();
        assert_eq!(fired, 1);
        let cfg: toml::Table = toml::from_str("[net]\nmax_frame = 1024\n").unwrap();
        assert_eq!(
            h.check_args(&[], &cfg).unwrap().as_deref(),
            Some("net.max_frame too small for our game")
        );
        let cfg: toml::Table = toml::from_str("[net]\nmax_frame = 65536\n").unwrap();
        assert_eq!(h.check_args(&["run".into()], &cfg).unwrap(), None);
        assert_eq!(
            h.check_args(&["--forbidden".into()], &cfg)
                .unwrap()
                .as_deref(),
            Some("no --forbidden")
        );
        let t: mlua::Table = h.sb.lua.globals().get("lattice").unwrap();
        assert!(table_keys(&t).contains(&"on".to_string()));
    }
}

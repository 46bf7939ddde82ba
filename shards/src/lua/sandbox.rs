//! A sandboxed Lua 5.4 state: only the table, string, math, utf8 and coroutine libraries (plus the
//! safe part of the base library), no `load`, `loadfile`, `dofile`, `require`, `collectgarbage`,
//! `print` or `string.dump`, no `io`, `os`, `package` or `debug`; a memory limit for the state and
//! an instruction budget for each call into it.
//!
//! The budget is counted by a hook every [`HOOK_EVERY`] instructions, set for the main thread and
//! every coroutine (a global hook); past the budget the call fails with a Lua error, which unwinds
//! the script and leaves the state usable. Past the memory limit an allocation fails with a Lua
//! "not enough memory" error, with the same outcome.
//!
//! A spent budget stays spent until the next call: every later hook check fails again, and the
//! functions that catch errors (`pcall`, `xpcall`, `coroutine.resume`) re-raise the budget error
//! once it is spent, whatever they caught, so no script can catch it and go on (`coroutine.wrap`
//! re-raises by itself). Lua runs some script code with hooks off, where no budget is counted:
//! `__gc` metamethods; an `xpcall` message handler called for an error the hook raised; the
//! `__close` metamethods of a coroutine the hook stopped, when it is closed. So `xpcall` runs its
//! handler after the unwinding (under `pcall`, with the hook on), `setmetatable` refuses a
//! metatable with a `__gc` or `__close` field, the string metatable is hidden (`getmetatable("")`
//! is `false`) so no script can give strings such a field, and a chunk that declares a
//! to-be-closed variable is refused before it runs ([`declares_to_be_closed`] reads its
//! bytecode): a metatable can get its `__close` after `setmetatable` accepted it, and Lua runs
//! the `__close` of a variable closed while the budget error unwinds without counting. (A `__gc`
//! given later does not matter: Lua 5.4 finalizes only tables whose metatable had `__gc` when it
//! was set.)
//!
//! Lua counts the hook's instructions per thread: a coroutine that ends before its first check
//! runs up to [`HOOK_EVERY`] - 1 instructions no check sees. So `coroutine.create` and
//! `coroutine.wrap` take [`HOOK_EVERY`] instructions off the budget: fresh coroutines cannot add up
//! to more than it.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{HookTriggers, Lua, LuaOptions, StdLib, VmState};

/// Instructions between two budget checks.
pub const HOOK_EVERY: u32 = 1000;

/// Globals removed from the base library.
pub const REMOVED: [&str; 7] = [
    "load",
    "loadfile",
    "dofile",
    "require",
    "collectgarbage",
    "print",
    "loadstring",
];

/// Limits of one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes the state may allocate.
    pub memory: usize,
    /// Instructions one call may run.
    pub instructions: u64,
}

/// A sandboxed state and its per-call budget.
pub struct Sandbox {
    /// The state.
    pub lua: Lua,
    left: Rc<Cell<u64>>,
    limits: Limits,
}

/// The error text of an exhausted budget.
pub const BUDGET_EXCEEDED: &str = "instruction budget exceeded";

/// Replaces the catching functions and `setmetatable`, and hides the string metatable (see the
/// module docs). Gets `spent`, a function that raises the budget error once the budget is spent
/// and else returns its arguments, and `charge`, which takes [`HOOK_EVERY`] instructions off it.
const GUARD: &str = r#"
local spent, charge = ...
local pcall, resume, create, wrap = pcall, coroutine.resume, coroutine.create, coroutine.wrap
coroutine.create = function(f) charge() return create(f) end
coroutine.wrap = function(f) charge() return wrap(f) end
local setmetatable, rawget, type, error = setmetatable, rawget, type, error
_G.pcall = function(...) return spent(pcall(...)) end
local function first(_, v) return v end
local function handled(h, ok, ...)
  if ok then return true, ... end
  return false, first(pcall(h, (...)))
end
_G.xpcall = function(f, h, ...) return spent(handled(h, pcall(f, ...))) end
coroutine.resume = function(...) return spent(resume(...)) end
_G.setmetatable = function(t, mt)
  if type(mt) == "table" and (rawget(mt, "__gc") ~= nil or rawget(mt, "__close") ~= nil) then
    error("__gc and __close metamethods are not allowed (Lua can run them with the instruction budget unchecked)", 2)
  end
  return setmetatable(t, mt)
end
getmetatable("").__metatable = false
"#;

impl Sandbox {
    /// A new state with `limits`.
    pub fn new(limits: Limits) -> mlua::Result<Sandbox> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE,
            LuaOptions::default(),
        )?;
        let g = lua.globals();
        for name in REMOVED {
            g.raw_remove(name)?;
        }
        let string: mlua::Table = g.get("string")?;
        string.raw_remove("dump")?;
        let left = Rc::new(Cell::new(limits.instructions));
        let l2 = left.clone();
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| {
                let now = l2.get().saturating_sub(u64::from(HOOK_EVERY));
                l2.set(now);
                if now == 0 {
                    Err(mlua::Error::runtime(BUDGET_EXCEEDED))
                } else {
                    Ok(VmState::Continue)
                }
            },
        )?;
        let l3 = left.clone();
        let spent = lua.create_function(move |_, rets: mlua::MultiValue| {
            if l3.get() == 0 {
                Err(mlua::Error::runtime(BUDGET_EXCEEDED))
            } else {
                Ok(rets)
            }
        })?;
        let l4 = left.clone();
        let charge = lua.create_function(move |_, ()| {
            let now = l4.get().saturating_sub(u64::from(HOOK_EVERY));
            l4.set(now);
            if now == 0 {
                Err(mlua::Error::runtime(BUDGET_EXCEEDED))
            } else {
                Ok(())
            }
        })?;
        lua.load(GUARD)
            .set_name("=sandbox")
            .call::<()>((spent, charge))?;
        lua.set_memory_limit(limits.memory)?;
        Ok(Sandbox { lua, left, limits })
    }

    /// Runs `f` (a call into the state) with a fresh instruction budget.
    pub fn call<R>(&self, f: impl FnOnce(&Lua) -> mlua::Result<R>) -> mlua::Result<R> {
        self.left.set(self.limits.instructions.max(1));
        f(&self.lua)
    }

    /// Runs a chunk of source named `name` with a fresh budget. A chunk that declares a
    /// to-be-closed variable anywhere (`local x <close>`) is refused before it runs: a script
    /// can give a table's metatable a `__close` field after `setmetatable` accepted it, and Lua
    /// runs the `__close` of a variable closed while the budget error unwinds with no check.
    pub fn exec(&self, name: &str, source: &str) -> mlua::Result<()> {
        self.call(|lua| {
            let f = lua.load(source).set_name(format!("@{name}")).into_function()?;
            match declares_to_be_closed(&f.dump(true)) {
                Ok(false) => f.call(()),
                Ok(true) => Err(mlua::Error::runtime(format!(
                    "{name}: to-be-closed variables (local x <close>) are not allowed: Lua can run their __close with the instruction budget unchecked"
                ))),
                Err(e) => Err(mlua::Error::runtime(format!(
                    "{name}: compiled chunk not understood ({e}); refused"
                ))),
            }
        })
    }

    /// Bytes the state uses now.
    pub fn used_memory(&self) -> usize {
        self.lua.used_memory()
    }
}

/// `OP_TBC` of Lua 5.4 (`lopcodes.h`): the instruction that marks a variable to be closed.
const OP_TBC: u32 = 55;

/// Whether the Lua 5.4 binary chunk `b` (`string.dump` format, debug information stripped or
/// not) has an `OP_TBC` instruction in its main function or in any function nested in it.
/// Errors when `b` is not such a chunk (another Lua version, truncated).
pub fn declares_to_be_closed(b: &[u8]) -> Result<bool, String> {
    struct R<'a>(&'a [u8], usize);
    impl R<'_> {
        fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
            let end = self.1.checked_add(n).filter(|&e| e <= self.0.len());
            let end = end.ok_or_else(|| format!("truncated at byte {}", self.1))?;
            let s = &self.0[self.1..end];
            self.1 = end;
            Ok(s)
        }
        fn byte(&mut self) -> Result<u8, String> {
            Ok(self.bytes(1)?[0])
        }
        // lundump.c's loadUnsigned: 7-bit groups, most significant first, the last one marked.
        fn size(&mut self) -> Result<usize, String> {
            let mut x: usize = 0;
            loop {
                let b = self.byte()?;
                if x > usize::MAX >> 7 {
                    return Err("size overflow".into());
                }
                x = (x << 7) | usize::from(b & 0x7f);
                if b & 0x80 != 0 {
                    return Ok(x);
                }
            }
        }
        fn string(&mut self) -> Result<(), String> {
            let n = self.size()?;
            if n > 0 {
                self.bytes(n - 1)?;
            }
            Ok(())
        }
        fn function(&mut self, depth: u32) -> Result<bool, String> {
            if depth > 256 {
                return Err("functions nested too deep".into());
            }
            self.string()?; // source
            self.size()?; // linedefined
            self.size()?; // lastlinedefined
            self.bytes(3)?; // numparams, is_vararg, maxstacksize
            let code = self.size()?;
            let mut tbc = false;
            for w in self
                .bytes(code.checked_mul(4).ok_or("code size overflow")?)?
                .chunks(4)
            {
                let i = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                tbc |= i & 0x7f == OP_TBC;
            }
            for _ in 0..self.size()? {
                match self.byte()? {
                    0 | 1 | 17 => {} // nil, false, true
                    3 | 19 => {
                        self.bytes(8)?; // integer, float
                    }
                    4 | 20 => self.string()?, // short and long strings
                    t => return Err(format!("unknown constant type {t}")),
                }
            }
            let up = self.size()?;
            self.bytes(up.checked_mul(3).ok_or("upvalue count overflow")?)?;
            for _ in 0..self.size()? {
                tbc |= self.function(depth + 1)?;
            }
            let lines = self.size()?;
            self.bytes(lines)?;
            for _ in 0..self.size()? {
                self.size()?;
                self.size()?;
            }
            for _ in 0..self.size()? {
                self.string()?;
                self.size()?;
                self.size()?;
            }
            for _ in 0..self.size()? {
                self.string()?;
            }
            Ok(tbc)
        }
    }
    let mut r = R(b, 0);
    // Signature, version 5.4, format 0, LUAC_DATA, the three sizes, LUAC_INT, LUAC_NUM.
    let head = r.bytes(31)?;
    if &head[..4] != b"\x1bLua"
        || head[4] != 0x54
        || head[12] != 4
        || head[13] != 8
        || head[14] != 8
    {
        return Err("not a Lua 5.4 chunk with 4-byte instructions and 8-byte integers".into());
    }
    r.byte()?; // upvalues of the main function
    r.function(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Sandbox {
        Sandbox::new(Limits {
            memory: 4 << 20,
            instructions: 200_000,
        })
        .unwrap()
    }

    #[test]
    fn only_the_safe_libraries_are_there() {
        let s = sb();
        for absent in [
            "io",
            "os",
            "package",
            "debug",
            "load",
            "loadfile",
            "dofile",
            "require",
            "collectgarbage",
            "print",
        ] {
            let t: String = s
                .call(|l| l.load(format!("return type({absent})")).eval())
                .unwrap();
            assert_eq!(t, "nil", "{absent} must not exist");
        }
        for present in [
            "table",
            "string",
            "math",
            "utf8",
            "coroutine",
            "pairs",
            "pcall",
        ] {
            let t: String = s
                .call(|l| l.load(format!("return type({present})")).eval())
                .unwrap();
            assert_ne!(t, "nil", "{present} must exist");
        }
        let t: String = s
            .call(|l| l.load("return type(string.dump)").eval())
            .unwrap();
        assert_eq!(t, "nil");
    }

    #[test]
    fn a_runaway_loop_hits_the_budget_and_the_state_lives() {
        let s = sb();
        let e = s.exec("spin.lua", "while true do end").unwrap_err();
        assert!(e.to_string().contains(BUDGET_EXCEEDED), "{e}");
        // Also inside a coroutine (the hook is global).
        let e = s
            .exec(
                "co.lua",
                "local c = coroutine.wrap(function() while true do end end) c()",
            )
            .unwrap_err();
        assert!(e.to_string().contains(BUDGET_EXCEEDED), "{e}");
        // And pcall cannot swallow it for long: the budget is for the whole call.
        let e = s
            .exec("pcall.lua", "for i = 1, 1e9 do pcall(function() end) end")
            .unwrap_err();
        assert!(e.to_string().contains(BUDGET_EXCEEDED), "{e}");
        let v: i64 = s.call(|l| l.load("return 1 + 2").eval()).unwrap();
        assert_eq!(v, 3, "the state still works");
    }

    #[test]
    fn nothing_catches_a_spent_budget() {
        let s = sb();
        for (name, src) in [
            (
                "pcall",
                "for i = 1, 1e7 do pcall(function() while true do end end) end",
            ),
            (
                "pcall loop",
                "while true do pcall(function() while true do end end) end",
            ),
            (
                "xpcall",
                "while true do xpcall(function() while true do end end, function(e) return e end) end",
            ),
            (
                "xpcall handler",
                "while true do xpcall(error, function(e) while true do end end) end",
            ),
            (
                "resume",
                "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
            ),
            (
                "wrap",
                "while true do pcall(coroutine.wrap(function() while true do end end)) end",
            ),
            (
                "xpcall of a loop, looping handler",
                "xpcall(function() while true do end end, function(e) while true do end end)",
            ),
            (
                "many short coroutines",
                "local function short() for i = 1, 300 do end end
                 local function nest(d)
                   for i = 1, 20 do
                     if d > 0 then coroutine.wrap(nest)(d - 1) else coroutine.wrap(short)() end
                   end
                 end
                 while true do coroutine.wrap(nest)(6) end",
            ),
            (
                "gsub",
                "while true do pcall(string.gsub, 'aaaa', 'a', function() while true do end end) end",
            ),
            (
                "sort",
                "while true do pcall(table.sort, {3, 2, 1}, function(a, b) while true do end end) end",
            ),
        ] {
            let e = s.exec(name, src).unwrap_err();
            assert!(e.to_string().contains(BUDGET_EXCEEDED), "{name}: {e}");
            let v: i64 = s.call(|l| l.load("return 1 + 2").eval()).unwrap();
            assert_eq!(v, 3, "{name}: the state still works");
        }
        // Lua can run these with hooks off: no script may set one.
        for (name, src) in [
            (
                "gc",
                "setmetatable({}, { __gc = function() while true do end end })",
            ),
            (
                "close",
                "local x = setmetatable({}, { __close = function() while true do end end })",
            ),
            (
                "string close",
                "getmetatable('').__close = function() while true do end end",
            ),
        ] {
            let e = s.exec(name, src).unwrap_err();
            let e = e.to_string();
            assert!(
                e.contains("__gc") || e.contains("index a boolean"),
                "{name}: {e}"
            );
        }
    }

    #[test]
    fn to_be_closed_variables_are_refused_before_the_chunk_runs() {
        let s = sb();
        // The metatable gets its __close after setmetatable accepted it; the loop then runs past
        // the budget, and Lua would run the looping __close unchecked while that error unwinds.
        let late = "local mt = {} local o = setmetatable({}, mt)
                    mt.__close = function() while true do end end
                    do local v <close> = o; while true do end end";
        let nested = "ran = true
                      function f() local g = function() local v <close> = nil end end";
        for (name, src) in [("late.lua", late), ("nested.lua", nested)] {
            let e = s.exec(name, src).unwrap_err().to_string();
            assert!(e.contains("to-be-closed variables"), "{name}: {e}");
        }
        let ran: Option<bool> = s.call(|l| l.globals().get("ran")).unwrap();
        assert_eq!(ran, None, "a refused chunk does not run at all");
        // What the check reads past: every constant type, upvalues, nested functions, debug
        // information, <const> (which is not to-be-closed).
        s.exec(
            "ok.lua",
            "local k <const> = 7
             local t = { 1, 2.5, 'short', string.rep('x', 100), true, false, nil, 1 << 62 }
             local function outer(a) return function(b) return a + b + k end end
             ok = outer(1)(2) + #t",
        )
        .unwrap();
        let ok: i64 = s.call(|l| l.globals().get("ok")).unwrap();
        assert_eq!(ok, 10 + 8);
        assert!(declares_to_be_closed(b"\x1bLua\x54").is_err());
        assert!(
            declares_to_be_closed(b"garbage that is long enough to be a header, but is not")
                .is_err()
        );
    }

    #[test]
    fn the_guarded_functions_still_work() {
        let s = sb();
        let ok: bool = s
            .call(|l| {
                l.load(
                    r##"local ok, e = pcall(error, "x")
                       local n = select("#", pcall(function() return 1, nil, 3 end))
                       local ok2, v = xpcall(function() error("y") end, function(e) return "h" end)
                       local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
                       local _, y1 = coroutine.resume(co, 1)
                       local _, y2 = coroutine.resume(co, 5)
                       local w = coroutine.wrap(function() pcall(coroutine.yield, 7) return 8 end)
                       local t = setmetatable({}, { __index = function() return 9 end })
                       return not ok and e == "x" and n == 4 and not ok2 and v == "h"
                         and y1 == 2 and y2 == 10 and w() == 7 and w() == 8 and t.z == 9
                         and coroutine.close(coroutine.create(function() end))"##,
                )
                .eval()
            })
            .unwrap();
        assert!(ok);
    }

    #[test]
    fn memory_is_capped_and_the_state_lives() {
        let s = Sandbox::new(Limits {
            memory: 1 << 20,
            instructions: u64::MAX,
        })
        .unwrap();
        let e = s
            .exec(
                "hog.lua",
                "local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 64) .. i end",
            )
            .unwrap_err();
        assert!(
            matches!(e, mlua::Error::MemoryError(_)) || e.to_string().contains("memory"),
            "{e}"
        );
        assert!(s.used_memory() <= 1 << 20);
        let v: i64 = s.call(|l| l.load("return 40 + 2").eval()).unwrap();
        assert_eq!(v, 42);
    }
}

//! Settings of session continuity and operator control: `[session]` (resume), `[limits]` (rate
//! limits) and `[access]` (IP rules), as typed sections, and what the runtime builds from them.

use std::time::Duration;

use lattice_wire::rate::{RateLimit, RatePolicy, SessionRates};
use lattice_wire::ResumeLimits;

use super::access::{AccessConfig, AccessRules, CidrError};

/// `[session]` section: resume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// How long a resumable session whose socket was lost waits for a `Resume`, in ms.
    pub resume_window_ms: u64,
    /// Most frames kept for replay per session.
    pub replay_max_frames: usize,
    /// Most bytes kept for replay per session.
    pub replay_max_bytes: usize,
    /// How long an acknowledgement waits for an outgoing frame before an `Ack` frame carries it, in
    /// ms.
    pub ack_delay_ms: u64,
    /// How long a closing session's socket may take to write what was queued for it and then to
    /// see the peer close its side (lingering close), in ms.
    pub close_linger_ms: u64,
}

/// The runtime's documented defaults: the one source of every default below.
const DEFAULTS: &str = include_str!("../../../../deploy/lattice.toml");

/// Section `name` of the documented defaults.
fn default_section<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let table: toml::Table = DEFAULTS
        .parse()
        .expect("deploy/lattice.toml is valid TOML (a test checks)");
    crate::config::typed_section(&table, name)
        .unwrap_or_else(|e| panic!("deploy/lattice.toml [{name}]: {e}"))
}

impl Default for SessionConfig {
    /// `[session]` of `deploy/lattice.toml`.
    fn default() -> Self {
        default_section("session")
    }
}

impl SessionConfig {
    /// The session state machine's resume bounds.
    pub fn resume_limits(&self) -> ResumeLimits {
        ResumeLimits {
            window: Duration::from_millis(self.resume_window_ms),
            max_frames: self.replay_max_frames,
            max_bytes: self.replay_max_bytes,
            ack_delay: Duration::from_millis(self.ack_delay_ms),
        }
    }
}

/// A limit's policy as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyName {
    /// Refuse the excess with `Error{RATE_LIMITED}`.
    Error,
    /// Refuse the excess and close (sessions: after `session_close_after` violations; new
    /// connections: at once, without an answer).
    Close,
}

/// `[limits]` section: rate limits. A rate of 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Frames per second one session may send.
    pub session_msgs_per_s: u64,
    /// Frames one session may send at once.
    pub session_msgs_burst: u64,
    /// What an excess frame gets.
    pub session_msgs_policy: PolicyName,
    /// Bytes per second one session may send.
    pub session_bytes_per_s: u64,
    /// Bytes one session may send at once.
    pub session_bytes_burst: u64,
    /// What an excess frame gets.
    pub session_bytes_policy: PolicyName,
    /// Violations of a `close` limit after which the session closes.
    pub session_close_after: u32,
    /// New connections per second from one source address.
    pub ip_conns_per_s: u64,
    /// New connections at once from one source address.
    pub ip_conns_burst: u64,
    /// What an excess connection gets.
    pub ip_policy: PolicyName,
    /// Source addresses the per-address table tracks.
    pub ip_table_size: usize,
}

impl Default for LimitsConfig {
    /// `[limits]` of `deploy/lattice.toml`.
    fn default() -> Self {
        default_section("limits")
    }
}

fn policy(p: PolicyName) -> RatePolicy {
    match p {
        PolicyName::Error => RatePolicy::Error,
        PolicyName::Close => RatePolicy::Close,
    }
}

impl LimitsConfig {
    /// The per-session limits.
    pub fn session_rates(&self) -> SessionRates {
        SessionRates {
            msgs: RateLimit::per_second(self.session_msgs_per_s, self.session_msgs_burst),
            msgs_policy: policy(self.session_msgs_policy),
            bytes: RateLimit::per_second(self.session_bytes_per_s, self.session_bytes_burst),
            bytes_policy: policy(self.session_bytes_policy),
            close_after: self.session_close_after.max(1),
        }
    }

    /// The per-address connection limit.
    pub fn ip_limit(&self) -> Option<RateLimit> {
        RateLimit::per_second(self.ip_conns_per_s, self.ip_conns_burst)
    }

    /// Checks the values against each other; `max_frame` is `net.max_frame`. Returns the key and
    /// the problem.
    pub fn validate(&self, max_frame: u32) -> Result<(), (&'static str, String)> {
        if self.session_bytes_per_s > 0 && self.session_bytes_burst < u64::from(max_frame) {
            return Err((
                "limits.session_bytes_burst",
                format!(
                    "must be at least net.max_frame ({max_frame}) so one largest frame can pass"
                ),
            ));
        }
        for (key, burst, rate) in [
            (
                "limits.session_msgs_burst",
                self.session_msgs_burst,
                self.session_msgs_per_s,
            ),
            (
                "limits.ip_conns_burst",
                self.ip_conns_burst,
                self.ip_conns_per_s,
            ),
        ] {
            if rate > 0 && burst == 0 {
                return Err((key, "must be at least 1 when the rate is on".into()));
            }
        }
        if self.session_close_after == 0 {
            return Err(("limits.session_close_after", "must be at least 1".into()));
        }
        if self.ip_table_size == 0 {
            return Err(("limits.ip_table_size", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Everything above, as `Server::start_with` takes it. `Default` is the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinuityConfig {
    /// `[session]`.
    pub session: SessionConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[access]`.
    pub access: AccessConfig,
}

impl Default for ContinuityConfig {
    fn default() -> Self {
        ContinuityConfig {
            session: SessionConfig::default(),
            limits: LimitsConfig::default(),
            access: default_section("access"),
        }
    }
}

impl ContinuityConfig {
    /// The access rules of `[access]`.
    pub fn rules(&self) -> Result<AccessRules, CidrError> {
        AccessRules::new(&self.access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_documented_file_and_validate() {
        let c = ContinuityConfig::default();
        assert_eq!(c.session.resume_window_ms, 30_000);
        assert_eq!(c.limits.session_msgs_per_s, 0, "off by default");
        assert!(c.limits.session_rates().msgs.is_none());
        assert!(c.rules().unwrap().is_open());
        assert_eq!(c.limits.validate(1 << 20), Ok(()));
        let mut bad = c.limits.clone();
        bad.session_bytes_per_s = 1000;
        bad.session_bytes_burst = 10;
        assert_eq!(
            bad.validate(1 << 20).unwrap_err().0,
            "limits.session_bytes_burst"
        );
    }
}

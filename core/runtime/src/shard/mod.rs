//! One shard: its context ([`ShardCx`]), the application it runs ([`ShardApp`]), its state and its
//! loop.
//!
//! Files: `app.rs` the application trait; `cx.rs` what the application may do; `batch.rs` the replies for
//! another shard's sessions gathered during a pass and sent as one mesh message; `state.rs` the state
//! the loop and the connection tasks share, and how a session enters, runs, detaches and leaves;
//! `close_log.rs` which closes are ordinary (info) and which are violations (warn, rate-limited
//! per reason); `control.rs` the operator commands of the control lane; `run.rs` the loop pass,
//! parking and shutdown drain.

mod app;
mod batch;
mod close_log;
mod control;
mod cx;
mod run;
mod state;

pub use app::ShardApp;
pub use cx::{RebindError, ShardCx};
pub use state::{panic_message, IDLE_PASS_MAX};

pub(crate) use cx::CxSettings;
pub(crate) use run::{run, ShardParts};
pub(crate) use state::AcceptIn;

//! I/O driver choice: io_uring when the kernel allows it, epoll otherwise.

use std::future::Future;
use std::io;

/// `runtime.driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverChoice {
    /// Probe io_uring, fall back to epoll when it is missing or refused.
    Auto,
    /// io_uring or fail.
    Uring,
    /// epoll.
    Epoll,
}

/// The driver a shard actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring (readiness through a uring-registered epoll for sockets).
    Uring,
    /// epoll.
    Epoll,
}

impl DriverKind {
    /// Name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Uring => "uring",
            DriverKind::Epoll => "epoll",
        }
    }

    /// Code stored in the `driver` metric.
    pub fn code(self) -> u64 {
        match self {
            DriverKind::Uring => 1,
            DriverKind::Epoll => 2,
        }
    }
}

/// Builds the runtime for `choice` on the calling thread and runs `make()`'s future on it.
/// `make` receives the driver that was chosen. With `Auto`, an io_uring set-up failure (EPERM under
/// seccomp, ENOSYS, `kernel.io_uring_disabled`) falls back to epoll and the reason is returned
/// alongside.
pub fn run_on<F, Fut>(
    choice: DriverChoice,
    uring_entries: u32,
    make: F,
) -> io::Result<(Fut::Output, Option<String>)>
where
    F: FnOnce(DriverKind) -> Fut,
    Fut: Future,
{
    let uring = || {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(uring_entries)
            .enable_timer()
            .build()
    };
    let epoll = || {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
    };
    match choice {
        DriverChoice::Uring => {
            let mut rt = uring()?;
            Ok((rt.block_on(make(DriverKind::Uring)), None))
        }
        DriverChoice::Epoll => {
            let mut rt = epoll()?;
            Ok((rt.block_on(make(DriverKind::Epoll)), None))
        }
        DriverChoice::Auto => match uring() {
            Ok(mut rt) => Ok((rt.block_on(make(DriverKind::Uring)), None)),
            Err(e) => {
                let why = format!("io_uring unavailable ({e}); using epoll");
                let mut rt = epoll()?;
                Ok((rt.block_on(make(DriverKind::Epoll)), Some(why)))
            }
        },
    }
}

//! Publishing a value to reader threads with no lock on their read path.
//!
//! A writer (the admin thread) replaces the value; each reader keeps a [`Cached`] copy and pays
//! one atomic load per use while nothing changes, taking the switch's lock only to fetch a newer
//! value. Used for the IP rules and the per-address connection limit the acceptor applies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The current value and its version. See the module documentation.
#[derive(Debug)]
pub struct Switch<T> {
    version: AtomicU64,
    value: Mutex<Arc<T>>,
}

impl<T> Switch<T> {
    /// A switch holding `value` as version 1.
    pub fn new(value: T) -> Switch<T> {
        Switch {
            version: AtomicU64::new(1),
            value: Mutex::new(Arc::new(value)),
        }
    }

    /// The current value.
    pub fn current(&self) -> Arc<T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publishes a new value; readers pick it up at their next use.
    pub fn replace(&self, value: T) {
        let mut slot = self.value.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(value);
        // Bumped under the lock, after the store: a reader that sees the new version fetches the
        // new value.
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A reader's cache of the current value.
    pub fn cache(self: &Arc<Self>) -> Cached<T> {
        Cached {
            switch: self.clone(),
            version: self.version.load(Ordering::Acquire),
            value: self.current(),
        }
    }
}

/// One reader's copy of a [`Switch`]'s value.
#[derive(Debug)]
pub struct Cached<T> {
    switch: Arc<Switch<T>>,
    version: u64,
    value: Arc<T>,
}

impl<T> Cached<T> {
    /// The current value (refetched only when a newer one was published). Returns true in the
    /// second field when it changed since the last call.
    pub fn get(&mut self) -> (&T, bool) {
        let v = self.switch.version.load(Ordering::Acquire);
        let changed = v != self.version;
        if changed {
            self.value = self.switch.current();
            self.version = v;
        }
        (&self.value, changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_replacements_once() {
        let sw = Arc::new(Switch::new(1));
        let mut c = sw.cache();
        assert_eq!(c.get(), (&1, false));
        sw.replace(2);
        assert_eq!(c.get(), (&2, true));
        assert_eq!(c.get(), (&2, false));
        assert_eq!(*sw.current(), 2);
    }
}

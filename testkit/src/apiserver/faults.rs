//! Faults on demand, for robustness tests: server errors (before a write takes effect, or after it did — the
//! nastier case: the client must not redo what already happened), optimistic-concurrency conflicts, slow
//! responses and watches that end early. Discovery and OpenAPI are never faulted.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use rand::Rng;

/// What to inject, as probabilities per resource request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// 500 before the request takes effect.
    pub server_errors: f64,
    /// A write that succeeded is answered with 500 anyway.
    pub server_errors_after_write: f64,
    /// 409 Conflict for writes, before they take effect.
    pub conflicts: f64,
    /// Every request waits up to this long.
    pub max_delay: Duration,
    /// Watches end after 1–3 s (a dropped connection), so clients must re-watch.
    pub short_watches: bool,
}

/// How many faults were injected.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub server_errors: AtomicU64,
    pub server_errors_after_write: AtomicU64,
    pub conflicts: AtomicU64,
    pub short_watches: AtomicU64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
            + self.server_errors_after_write.load(Ordering::Relaxed)
            + self.conflicts.load(Ordering::Relaxed)
            + self.short_watches.load(Ordering::Relaxed)
    }
}

/// What to do with one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub delay: Duration,
    pub error_before: bool,
    pub conflict: bool,
    pub error_after: bool,
    /// Replace the watch's timeout with this many seconds.
    pub watch_seconds: Option<u64>,
}

impl Faults {
    pub fn decide(&self, write: bool, watch: bool, counts: &FaultCounts) -> Decision {
        if *self == Faults::default() {
            return Decision::default();
        }
        let mut rng = rand::rng();
        let mut d = Decision::default();
        if !self.max_delay.is_zero() {
            d.delay = self.max_delay.mul_f64(rng.random::<f64>());
        }
        if write && rng.random::<f64>() < self.conflicts {
            d.conflict = true;
            counts.conflicts.fetch_add(1, Ordering::Relaxed);
        } else if rng.random::<f64>() < self.server_errors {
            d.error_before = true;
            counts.server_errors.fetch_add(1, Ordering::Relaxed);
        } else if write && rng.random::<f64>() < self.server_errors_after_write {
            d.error_after = true;
            counts.server_errors_after_write.fetch_add(1, Ordering::Relaxed);
        }
        if watch && self.short_watches {
            d.watch_seconds = Some(rng.random_range(1..=3));
            counts.short_watches.fetch_add(1, Ordering::Relaxed);
        }
        d
    }
}

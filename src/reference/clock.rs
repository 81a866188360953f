//! Time, injected: the model never reads the system clock itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Milliseconds since the Unix epoch, as the model sees them.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// A clock that moves only when told to. Cloning shares it.
#[derive(Debug, Clone)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    /// 2016-05-17, the date of the FCM announcement: any fixed start would do.
    pub const EPOCH_MS: u64 = 1_463_443_200_000;

    pub fn new() -> Self {
        VirtualClock(Arc::new(AtomicU64::new(Self::EPOCH_MS)))
    }

    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

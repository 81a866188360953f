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

/// Which clock a reference keeps: virtual (time moves only when a sender's clock is
/// advanced through the control API) or the machine's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClockKind {
    #[default]
    Virtual,
    /// Real time drives throttling grants, time-to-live expiry, propagation windows and the
    /// timing of retries (`serve --clock wall`); a sender's clock may still be advanced.
    Wall,
}

/// The machine's clock. A state file's replay pins it to the time each input was taken at,
/// so that the same inputs give the same state again.
#[derive(Debug, Clone, Default)]
pub struct WallClock(Arc<AtomicU64>);

impl WallClock {
    /// Reads `ms` from now on (`None`: the machine's clock again).
    pub fn pin(&self, ms: Option<u64>) {
        self.0.store(ms.unwrap_or(0), Ordering::SeqCst);
    }

    pub fn live_ms() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

impl Clock for WallClock {
    fn now_ms(&self) -> u64 {
        match self.0.load(Ordering::SeqCst) {
            0 => Self::live_ms(),
            pinned => pinned,
        }
    }
}

//! The driver's clock: engine instants are nanoseconds since one `std::time::Instant` taken at
//! startup, shared by every event loop (so reports from all loops use one time line).

use fanout_engine::Instant;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: std::time::Instant,
    /// The wall-clock time at `epoch`, for report timestamps.
    pub(crate) wall_epoch: SystemTime,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Clock {
            epoch: std::time::Instant::now(),
            wall_epoch: SystemTime::now(),
        }
    }

    /// Now, as the engine counts time. Never goes backwards.
    pub(crate) fn now(&self) -> Instant {
        let nanos = self.epoch.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// An engine instant on the std clock.
    pub(crate) fn to_std(self, at: Instant) -> std::time::Instant {
        self.epoch + Duration::from_nanos(at.as_nanos())
    }
}

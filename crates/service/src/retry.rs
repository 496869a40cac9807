//! Pauses between tries of something that keeps failing (the archive's database
//! away): doubling from the usual pace up to a cap, so that an outage costs a few
//! log lines and connection attempts a minute, not one a second.

use std::time::Duration;

/// The longest pause between two tries.
const CAP: Duration = Duration::from_secs(30);

/// Consecutive failures of one loop, and the pause they call for.
pub(crate) struct Retry {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Retry {
    /// Pauses start at `base` (the loop's usual pace) and stop growing at 30 s, or at
    /// `base` for a loop slower than that.
    pub fn new(base: Duration) -> Self {
        let base = base.max(Duration::from_millis(10));
        Self::capped(base, CAP.max(base))
    }

    /// Pauses start at `base` and never exceed `cap`.
    pub fn capped(base: Duration, cap: Duration) -> Self {
        Self { base, cap, failures: 0 }
    }

    /// One more failure: the pause before the next try.
    pub fn failed(&mut self) -> Duration {
        let pause = self.base.saturating_mul(1u32 << self.failures.min(16)).min(self.cap);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// A pause as a log line shows it (`1s`, `500ms`).
pub(crate) struct Shown(pub Duration);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        tfaudit_config::Duration(self.0).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_the_cap_and_start_over_after_a_success() {
        let mut r = Retry::new(Duration::from_secs(1));
        let pauses: Vec<u64> = (0..7).map(|_| r.failed().as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 30, 30]);
        r.succeeded();
        assert_eq!(r.failed(), Duration::from_secs(1));
        // A loop slower than the cap keeps its own pace.
        assert_eq!(Retry::new(Duration::from_secs(60)).failed(), Duration::from_secs(60));
    }
}

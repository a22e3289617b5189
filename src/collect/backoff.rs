//! Exponential reconnect backoff with jitter, so that a plant-wide outage does not
//! make every gateway hammer its hosts in lockstep when they come back.

use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    next_try: Option<Instant>,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap, failures: 0, next_try: None }
    }

    /// Time left before the next attempt is allowed, if any.
    pub fn remaining(&self) -> Option<Duration> {
        let next = self.next_try?;
        let now = Instant::now();
        (next > now).then(|| next - now)
    }

    /// Record a failed attempt; returns the delay chosen before the next one:
    /// `min(cap, base * 2^(n-1))`, scaled by a random factor in [0.5, 1.0].
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = self.delay_for(self.failures, rand::rng().random_range(0.5..=1.0));
        self.next_try = Some(Instant::now() + delay);
        delay
    }

    fn delay_for(&self, failures: u32, jitter: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        exp.min(self.cap).mul_f64(jitter)
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.next_try = None;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(b.delay_for(1, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay_for(2, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay_for(6, 1.0), Duration::from_secs(32));
        assert_eq!(b.delay_for(7, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay_for(400, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay_for(7, 0.5), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(4), Duration::from_secs(60));
        assert_eq!(b.remaining(), None);
        let d = b.failed();
        assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(4));
        assert!(b.remaining().is_some());
        tokio::time::advance(d).await;
        assert_eq!(b.remaining(), None);
        b.failed();
        assert_eq!(b.failures(), 2);
        b.succeeded();
        assert_eq!((b.failures(), b.remaining()), (0, None));
    }
}

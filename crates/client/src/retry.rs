//! Exponential backoff bounded by a retry count and an overall deadline.
//!
//! Pure bookkeeping with no timers of its own, so a test can drive it and
//! the producer can keep one per batch while the batch waits in a queue.

use std::time::Duration;

use tokio::time::Instant;

use crate::ClientConfig;

/// Retry state of one call: how long to wait before the next attempt, or
/// that the caller must give up.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
    retries_left: u32,
    deadline: Instant,
}

impl Backoff {
    /// A fresh backoff for a call starting `now`.
    pub(crate) fn new(config: &ClientConfig, now: Instant) -> Self {
        Backoff {
            next: config.retry_backoff_initial,
            max: config.retry_backoff_max,
            retries_left: config.retries_max,
            deadline: now + config.retry_deadline,
        }
    }

    /// The wait before the next retry, or `None` when retries are used up or
    /// the wait would end past the deadline.
    pub(crate) fn next_delay(&mut self, now: Instant) -> Option<Duration> {
        if self.retries_left == 0 || now + self.next >= self.deadline {
            return None;
        }
        self.retries_left -= 1;
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_max_then_stops_at_retry_count() {
        let config = ClientConfig { retries_max: 8, ..Default::default() };
        let now = Instant::now();
        let mut b = Backoff::new(&config, now);
        let delays: Vec<u64> =
            std::iter::from_fn(|| b.next_delay(now)).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn stops_at_deadline() {
        let config = ClientConfig { retry_deadline: Duration::from_millis(120), ..Default::default() };
        let now = Instant::now();
        let mut b = Backoff::new(&config, now);
        assert_eq!(b.next_delay(now), Some(Duration::from_millis(50)));
        // 50 ms later the next wait (100 ms) would end at 150 ms > 120 ms.
        assert_eq!(b.next_delay(now + Duration::from_millis(50)), None);
    }
}

//! Which records each producer task sends, and when under `--rate`.
//!
//! Record `i` (0-based, over the whole run) belongs to producer task
//! `i % producers`, so the tasks interleave and together follow one fixed
//! schedule: record `i` is due `i / rate` seconds after the start. A
//! record's latency is counted from that due time, not from when it was
//! actually sent, so a stall of the producer, the client or the broker
//! shows up in the latency of every record that should have gone out
//! during it, instead of silently lowering the send rate (the "coordinated
//! omission" that makes closed-loop benchmarks look better than they are).

use std::time::Duration;

/// The send schedule of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Schedule {
    /// Records in the whole run.
    pub(crate) records: u64,
    /// Producer tasks sharing them.
    pub(crate) producers: u64,
    /// Records per second over all tasks; `None` sends as fast as possible.
    pub(crate) rate: Option<f64>,
}

impl Schedule {
    /// How many records producer task `task` sends: the indices below
    /// `records` that are `task` modulo `producers`.
    pub(crate) fn share(&self, task: u64) -> u64 {
        assert!(task < self.producers, "task {task} of {} producers", self.producers);
        let (whole, rest) = (self.records / self.producers, self.records % self.producers);
        whole + u64::from(task < rest)
    }

    /// The run-wide index of the `k`-th record of task `task`.
    pub(crate) fn index(&self, task: u64, k: u64) -> u64 {
        debug_assert!(k < self.share(task));
        task + k * self.producers
    }

    /// When record `index` is due, after the start; `None` without a rate.
    pub(crate) fn due(&self, index: u64) -> Option<Duration> {
        // f64 holds every index below 2^53 exactly; runs are far smaller.
        self.rate.map(|rate| Duration::from_secs_f64(index as f64 / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_record_once() {
        for (records, producers) in [(0, 1), (1, 4), (10, 3), (1_000_000, 7), (5, 5), (6, 5)] {
            let s = Schedule { records, producers, rate: None };
            let mut seen = vec![false; records as usize];
            for task in 0..producers {
                for k in 0..s.share(task) {
                    let i = s.index(task, k) as usize;
                    assert!(!seen[i], "record {i} sent twice ({records} records, {producers} tasks)");
                    seen[i] = true;
                }
            }
            assert!(seen.iter().all(|s| *s), "a record was not sent ({records} records, {producers} tasks)");
        }
        let s = Schedule { records: 10, producers: 4, rate: None };
        assert_eq!((0..4).map(|t| s.share(t)).collect::<Vec<_>>(), vec![3, 3, 2, 2]);
    }

    #[test]
    fn due_times_follow_the_rate_across_tasks() {
        let s = Schedule { records: 1_000, producers: 4, rate: Some(200.0) };
        assert_eq!(s.due(0), Some(Duration::ZERO));
        // Task 1's third record is run-wide record 9: due at 9 / 200 s.
        assert_eq!(s.index(1, 2), 9);
        assert_eq!(s.due(9), Some(Duration::from_millis(45)));
        assert_eq!(s.due(999), Some(Duration::from_millis(4_995)));
        // A fractional rate: one record every 2.5 s.
        let slow = Schedule { records: 3, producers: 1, rate: Some(0.4) };
        assert_eq!(slow.due(2), Some(Duration::from_secs(5)));
        assert_eq!(Schedule { rate: None, ..s }.due(9), None);
    }

    #[test]
    fn due_times_are_monotonic_at_high_rates() {
        let s = Schedule { records: 2_000_000, producers: 3, rate: Some(1_234_567.0) };
        let mut last = Duration::ZERO;
        for i in (0..2_000_000).step_by(997) {
            let due = s.due(i).unwrap();
            assert!(due >= last, "record {i} due before its predecessor");
            last = due;
        }
        let end = s.due(1_999_999).unwrap();
        assert!(end >= last);
        assert!((end.as_secs_f64() - 1_999_999.0 / 1_234_567.0).abs() < 1e-6, "{end:?}");
    }
}

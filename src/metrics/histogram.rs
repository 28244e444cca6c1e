//! A fixed-bucket latency histogram: plain counters owned by one worker (no lock, no
//! atomic, no allocation when recording), merged at scrape time and rendered as a
//! Prometheus histogram.

use std::fmt::Write;
use std::sync::OnceLock;
use std::time::Instant;

/// Upper bounds of the buckets, in nanoseconds: 50 µs to 10 s, roughly 1-2.5-5 per
/// decade. Everything slower lands in `+Inf`.
pub const BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Counts per bucket (the last is `+Inf`), their sum and total.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BOUNDS_NS.len() + 1],
    sum_ns: u64,
}

impl Histogram {
    /// Count one observation of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        self.counts[i] += 1;
        self.sum_ns = self.sum_ns.wrapping_add(ns);
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Add another worker's counts.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }

    /// The Prometheus text of the family `name` (cumulative buckets, seconds).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, n) in self.counts.iter().enumerate() {
            cumulative += n;
            match BOUNDS_NS.get(i) {
                Some(&b) => {
                    let le = b as f64 / 1e9;
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Nanoseconds on the process's monotonic clock (since its first use). Timestamps
/// from it travel with messages between workers, so they share one origin.
pub fn now_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let mut h = Histogram::default();
        h.record(50_000); // exactly the first bound: in it
        h.record(50_001);
        h.record(20_000_000_000); // beyond the last bound
        let mut text = String::new();
        h.render(&mut text, "x", "help");
        assert!(text.contains("x_bucket{le=\"0.00005\"} 1\n"), "{text}");
        assert!(text.contains("x_bucket{le=\"0.0001\"} 2\n"), "{text}");
        assert!(text.contains("x_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("x_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_count 3\n"), "{text}");
        let mut other = Histogram::default();
        other.merge(&h);
        assert_eq!(other.count(), 3);
    }
}

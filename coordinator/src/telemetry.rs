//! Counters and latency histograms for `/metrics`. Lock-free on the hot
//! paths (a report costs two atomic adds); the Prometheus text is rendered
//! by the HTTP layer from a snapshot.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (Prometheus' usual
/// spread from 100 µs to 10 s).
pub const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 10.0,
];

/// A cumulative histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in nanoseconds.
    sum_ns: AtomicU64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts per bucket of `BUCKETS`.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let buckets = self
            .counts
            .iter()
            .map(|c| {
                acc += c.load(Ordering::Relaxed);
                acc
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }
}

/// Histograms keyed by a label value (a route, a gRPC method).
#[derive(Debug, Default)]
pub struct HistogramVec {
    map: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
}

impl HistogramVec {
    pub fn get(&self, label: &str) -> std::sync::Arc<Histogram> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get(label) {
            return h.clone();
        }
        let h = std::sync::Arc::new(Histogram::default());
        map.insert(label.to_string(), h.clone());
        h
    }

    /// Observes the time until the returned guard is dropped.
    pub fn time(&self, label: &str) -> Timer {
        Timer {
            histogram: self.get(label),
            start: std::time::Instant::now(),
        }
    }

    pub fn snapshot(&self) -> Vec<(String, HistogramSnapshot)> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, h)| (k.clone(), h.snapshot())).collect()
    }
}

/// Records its lifetime in a histogram when dropped.
pub struct Timer {
    histogram: std::sync::Arc<Histogram>,
    start: std::time::Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed());
    }
}

#[derive(Debug, Default)]
pub struct Telemetry {
    pub reports: AtomicU64,
    pub lease_expiries: AtomicU64,
    pub trials_started: AtomicU64,
    /// Trial log text received from workers (retried chunks included).
    pub log_bytes: AtomicU64,
    /// Engine verbs as the gRPC handlers call them, by method.
    pub grpc: HistogramVec,
    /// HTTP requests, by route.
    pub http: HistogramVec,
}

impl Telemetry {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[5], 2); // ≤ 5 ms
        assert_eq!(*s.buckets.last().unwrap_or(&0), 2); // 60 s is above 10 s
        assert!((s.sum_seconds - 60.00305).abs() < 1e-6);
    }
}

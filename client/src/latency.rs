//! One-way latency of received packets, kept as a histogram of fixed buckets so that recording a
//! packet costs an index computation and an add: receivers record every packet, and the load
//! generator shares the machine with the node it measures.
//!
//! Buckets are log-linear: exact below 16 µs, then 16 buckets per power of two, so a
//! percentile is off by at most 1/16 (6 %) of its value. Values above about 67 s land in the
//! last bucket.

/// Exact buckets below this many microseconds.
const LINEAR: u64 = 16;
/// Buckets per power of two above that.
const PER_OCTAVE: u64 = 16;
/// The largest power of two covered: 2^26 µs is about 67 s.
const TOP_OCTAVE: u64 = 26;
/// How many buckets there are.
const BUCKETS: usize = (LINEAR + (TOP_OCTAVE - 4) * PER_OCTAVE) as usize;

/// A histogram of latencies in microseconds.
#[derive(Clone, PartialEq, Eq)]
pub struct Latency {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("samples", &self.total)
            .field("p50_us", &self.percentile(50.0))
            .field("p99_us", &self.percentile(99.0))
            .finish()
    }
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let octave = u64::from(63 - us.leading_zeros()); // 4 and up
    if octave >= TOP_OCTAVE {
        return BUCKETS - 1;
    }
    let sub = (us >> (octave - 4)) & (PER_OCTAVE - 1);
    (LINEAR + (octave - 4) * PER_OCTAVE + sub) as usize
}

/// The lowest value of a bucket and its width.
fn bounds_of(bucket: usize) -> (u64, u64) {
    let bucket = bucket as u64;
    if bucket < LINEAR {
        return (bucket, 1);
    }
    let octave = (bucket - LINEAR) / PER_OCTAVE + 4;
    let sub = (bucket - LINEAR) % PER_OCTAVE;
    ((PER_OCTAVE + sub) << (octave - 4), 1 << (octave - 4))
}

impl Latency {
    /// Counts one packet that took `us` microseconds.
    pub fn record(&mut self, us: u64) {
        let bucket = &mut self.counts[bucket_of(us)];
        *bucket = bucket.saturating_add(1);
        self.total += 1;
    }

    /// How many packets were counted.
    pub fn samples(&self) -> u64 {
        self.total
    }

    /// Adds what `other` counted.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total += other.total;
    }

    /// What was counted since `earlier`, a copy of this histogram taken before.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut counts = Box::new([0; BUCKETS]);
        for ((out, now), then) in counts
            .iter_mut()
            .zip(self.counts.iter())
            .zip(earlier.counts.iter())
        {
            *out = now.saturating_sub(*then);
        }
        Self {
            counts,
            total: self.total.saturating_sub(earlier.total),
        }
    }

    /// The latency that `p` percent of the packets did not exceed, in microseconds (the middle
    /// of its bucket); `None` without packets.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * self.total as f64)
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0u64;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += u64::from(*count);
            if seen >= rank {
                let (low, width) = bounds_of(bucket);
                return Some(low + width / 2);
            }
        }
        let (low, width) = bounds_of(BUCKETS - 1);
        Some(low + width / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_the_bucket_that_holds_it() {
        for us in (0..5_000).chain([65_535, 1_000_000, 60_000_000]) {
            let (low, width) = bounds_of(bucket_of(us));
            assert!(
                low <= us && us < low + width,
                "{us} in [{low}, {})",
                low + width
            );
            assert!(
                width * 16 <= low.max(16),
                "{us}: the bucket is at most 1/16 of its value"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_come_within_a_bucket() {
        let mut latency = Latency::default();
        for ms in 1..=100u64 {
            latency.record(ms * 1000);
        }
        let p50 = latency.percentile(50.0).unwrap();
        let p99 = latency.percentile(99.0).unwrap();
        assert!((47_000..=53_000).contains(&p50), "p50 {p50}");
        assert!((93_000..=105_000).contains(&p99), "p99 {p99}");
        assert_eq!(Latency::default().percentile(50.0), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_copies() {
        let mut latency = Latency::default();
        latency.record(100);
        let before = latency.clone();
        latency.record(9_000);
        latency.record(9_000);
        let window = latency.since(&before);
        assert_eq!(window.samples(), 2);
        assert!((8_500..=9_500).contains(&window.percentile(1.0).unwrap()));
        let mut merged = window.clone();
        merged.merge(&before);
        assert_eq!(merged, latency);
    }
}

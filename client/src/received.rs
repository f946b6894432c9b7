//! What a participant received, per remote track: packets, bytes, loss, latency, and which
//! simulcast layer the node forwarded when.
//!
//! The node forwards each subscriber one layer of a simulcast video at a time and may switch
//! it at any keyframe. Each layer numbers its packets on its own, so loss is counted per
//! stretch: a run of packets of one layer is expected to hold every index from its lowest to
//! its highest.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::latency::Latency;
use crate::outgoing::MAX_LAYERS;

/// The most layer changes a track remembers; a flapping track keeps its first ones.
const MAX_LAYER_CHANGES: usize = 10_000;

/// What one participant received from one remote track.
#[derive(Clone, Debug, Default)]
pub struct TrackStats {
    /// Intact packets received.
    pub packets: u64,
    /// Packets whose payload was not what the sender sent (or not addressed to this stream).
    pub corrupt: u64,
    /// When the first intact packet arrived.
    pub first_at: Option<Instant>,
    /// When the last intact packet arrived.
    pub last_at: Option<Instant>,
    /// The lowest index seen in the current stretch (of all, without simulcast).
    pub lowest_index: Option<u32>,
    /// The highest index seen in the current stretch (of all, without simulcast).
    pub highest_index: Option<u32>,
    /// Distinct packets seen: retransmissions of a packet count once.
    pub distinct: u64,
    /// Packets the stretches received so far span: for each stretch of one layer, its highest
    /// index less its lowest plus one. Without loss it equals `distinct`.
    pub expected: u64,
    /// The longest time between two intact packets.
    pub longest_gap: Duration,
    /// The one-way latency of every intact packet: its arrival less the send time it carries.
    pub latency: Latency,
    /// Payload bytes of the intact packets (RTP, SRTP, UDP and IP headers not counted).
    pub bytes: u64,
    /// Intact packets per simulcast layer, lowest first (everything else is layer 0).
    pub layer_packets: [u64; MAX_LAYERS],
    /// The layer of the current stretch: what the node forwards now.
    pub layer: Option<u8>,
    /// When each stretch began (the arrival of its first packet) and its layer, the first
    /// stretch included: the node's layer switches as this receiver saw them.
    pub layer_changes: Vec<(Instant, u8)>,
}

impl TrackStats {
    /// The share of the packets the stretches span that arrived.
    pub fn coverage(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        self.distinct as f64 / self.expected as f64
    }

    /// When the current layer began to arrive, if it is `layer`.
    pub fn on_layer_since(&self, layer: u8) -> Option<Instant> {
        self.layer_changes
            .last()
            .filter(|(_, current)| *current == layer)
            .map(|(at, _)| *at)
    }
}

/// The indices seen on a stream, one bit each: a receiver records every packet, for as long as
/// a call lasts.
#[derive(Debug, Default)]
pub(crate) struct SeenIndices {
    /// The index of the first bit.
    base: u32,
    bits: Vec<u64>,
    /// Indices below `base` (a packet that overtook earlier ones) or implausibly far above.
    elsewhere: HashSet<u32>,
}

impl SeenIndices {
    /// Beyond this many bits past `base` an index is kept in the set (32 MiB of bits).
    const MAX_BITS: u32 = 1 << 28;

    /// Marks `index` seen; `true` when it was not before.
    pub(crate) fn insert(&mut self, index: u32) -> bool {
        if self.bits.is_empty() && self.elsewhere.is_empty() {
            // Leave room for packets that arrive out of order just after the first one.
            self.base = index.saturating_sub(1024) & !63;
        }
        let offset = index.wrapping_sub(self.base);
        if index < self.base || offset >= Self::MAX_BITS {
            return self.elsewhere.insert(index);
        }
        let (word, bit) = ((offset / 64) as usize, offset % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let new = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        new
    }
}

#[derive(Debug, Default)]
struct TrackRecord {
    stats: TrackStats,
    /// The indices seen, per layer.
    seen: [SeenIndices; MAX_LAYERS],
}

impl TrackRecord {
    /// Counts a new index of `layer`: it extends the current stretch, or begins the next.
    fn stretch(&mut self, now: Instant, layer: u8, index: u32) {
        let stats = &mut self.stats;
        if stats.layer != Some(layer) {
            if stats.layer_changes.len() < MAX_LAYER_CHANGES {
                stats.layer_changes.push((now, layer));
            }
            stats.layer = Some(layer);
            stats.lowest_index = Some(index);
            stats.highest_index = Some(index);
            stats.expected += 1;
            return;
        }
        let (low, high) = (
            stats.lowest_index.unwrap_or(index),
            stats.highest_index.unwrap_or(index),
        );
        let span = |low: u32, high: u32| u64::from(high - low) + 1;
        let before = span(low, high);
        let (low, high) = (low.min(index), high.max(index));
        stats.expected += span(low, high) - before;
        stats.lowest_index = Some(low);
        stats.highest_index = Some(high);
    }
}

/// One intact packet as a receiver records it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrival {
    /// Its layer.
    pub layer: u8,
    /// Its index in its layer.
    pub index: u32,
    /// When it was sent, in microseconds since the Unix epoch.
    pub sent_at_us: u64,
    /// Its payload's length.
    pub bytes: usize,
}

/// What arrived on one remote track. Clones share the record: the receiving task keeps one and
/// records into it without looking the track up again.
#[derive(Clone, Debug, Default)]
pub struct TrackLog(Arc<Mutex<TrackRecord>>);

impl TrackLog {
    /// What was received so far.
    pub fn stats(&self) -> TrackStats {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stats
            .clone()
    }

    /// Counts one packet: intact or not; `now` and `now_us` are the arrival on the monotonic
    /// clock and in microseconds since the Unix epoch.
    pub(crate) fn record(&self, intact: Option<Arrival>, now: Instant, now_us: u64) {
        let mut record = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(arrival) = intact else {
            record.stats.corrupt += 1;
            return;
        };
        let layer = usize::from(arrival.layer).min(MAX_LAYERS - 1);
        let new = record.seen[layer].insert(arrival.index);
        if new {
            record.stretch(now, layer as u8, arrival.index);
        }
        let stats = &mut record.stats;
        stats.packets += 1;
        stats.bytes += arrival.bytes as u64;
        stats.layer_packets[layer] += 1;
        stats.first_at.get_or_insert(now);
        if let Some(last) = stats.last_at {
            stats.longest_gap = stats.longest_gap.max(now.duration_since(last));
        }
        stats.last_at = Some(now);
        if new {
            stats.distinct += 1;
        }
        stats
            .latency
            .record(now_us.saturating_sub(arrival.sent_at_us));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(layer: u8, index: u32, sent_at_us: u64) -> Option<Arrival> {
        Some(Arrival {
            layer,
            index,
            sent_at_us,
            bytes: 100,
        })
    }

    #[test]
    fn seen_indices_count_each_index_once_in_any_order() {
        let mut seen = SeenIndices::default();
        let indices = [
            5_000u32,
            5_002,
            5_001,
            4_990,
            5_002,
            3_000,
            3_000,
            4_000_000_000,
            5_001,
        ];
        let new: Vec<bool> = indices.iter().map(|&i| seen.insert(i)).collect();
        assert_eq!(
            new,
            [true, true, true, true, false, true, false, true, false]
        );
    }

    #[test]
    fn a_track_log_counts_loss_and_latency() {
        let log = TrackLog::default();
        let now = Instant::now();
        for index in (0..100u32).filter(|i| i % 10 != 3) {
            log.record(arrival(0, index, 1_000), now, 1_000 + 2_000);
        }
        log.record(arrival(0, 4, 1_000), now, 5_000); // a retransmission
        log.record(None, now, 0);
        let stats = log.stats();
        assert_eq!((stats.packets, stats.distinct, stats.corrupt), (91, 90, 1));
        assert_eq!(stats.expected, 100);
        assert!(
            (stats.coverage() - 0.9).abs() < 1e-9,
            "{}",
            stats.coverage()
        );
        assert_eq!(stats.bytes, 91 * 100);
        assert_eq!(stats.latency.samples(), 91);
        let p50 = stats.latency.percentile(50.0).unwrap();
        assert!((1_900..=2_100).contains(&p50), "{p50}");
    }

    #[test]
    fn layer_switches_begin_new_stretches_and_are_remembered() {
        let log = TrackLog::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        // Layer 0 from 1000, then layer 2 from 50, then back to 0 from 1200, one loss in each.
        for index in (1000..1010).filter(|i| *i != 1004) {
            log.record(arrival(0, index, 0), at(u64::from(index - 1000)), 0);
        }
        for index in (50..60).filter(|i| *i != 55) {
            log.record(arrival(2, index, 0), at(100 + u64::from(index)), 0);
        }
        for index in (1200..1210).filter(|i| *i != 1201) {
            log.record(arrival(0, index, 0), at(300 + u64::from(index - 1200)), 0);
        }
        let stats = log.stats();
        assert_eq!((stats.distinct, stats.expected), (27, 30));
        assert_eq!(stats.layer, Some(0));
        assert_eq!(stats.layer_packets, [18, 0, 9]);
        let changes: Vec<(Duration, u8)> = stats
            .layer_changes
            .iter()
            .map(|(when, layer)| (when.duration_since(start), *layer))
            .collect();
        assert_eq!(
            changes,
            vec![
                (Duration::from_millis(0), 0),
                (Duration::from_millis(150), 2),
                (Duration::from_millis(300), 0)
            ]
        );
        assert_eq!(stats.on_layer_since(0), Some(at(300)));
        assert_eq!(stats.on_layer_since(2), None);
        assert_eq!(
            (stats.lowest_index, stats.highest_index),
            (Some(1200), Some(1209))
        );
    }

    #[test]
    fn a_late_retransmission_of_the_old_layer_is_not_a_switch() {
        let log = TrackLog::default();
        let now = Instant::now();
        for index in 0..10 {
            log.record(arrival(1, index, 0), now, 0);
        }
        for index in 0..10 {
            log.record(arrival(2, index, 0), now, 0);
        }
        log.record(arrival(1, 9, 0), now, 0);
        let stats = log.stats();
        assert_eq!(stats.layer_changes.len(), 2);
        assert_eq!(stats.layer, Some(2));
    }
}

//! The node's metrics, as OpenMetrics text at `GET /metrics` on its health endpoint: what it
//! forwards, what it drops at the gate and why, its sessions, rooms and tracks, the downlink
//! estimates of its subscribers, the probes it sends, the CPU it uses (so that a rate of
//! `treffpunkt_node_cpu_seconds_total` over a rate of `treffpunkt_node_packets_total` is the
//! CPU per packet), and its clients' lines: packets lost both ways, NACKs both ways and what the
//! node sent again, the round-trip times and the packets waiting in the pacers. Updated once a
//! second by the run loop from [`Stats`]; nothing in them names a participant or a room.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::node::line::LineReading;

/// What the node counts, read once a second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Datagrams and frames received and sent, since the start.
    pub packets_in: u64,
    /// Sent.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Datagrams dropped at the gate since the start, by reason (in the order of
    /// [`DROP_REASONS`]).
    pub dropped: [u64; crate::node::gate::REASON_COUNT],
    /// Sessions open.
    pub sessions: u64,
    /// Rooms hosted.
    pub rooms: u64,
    /// Participants in them.
    pub participants: u64,
    /// Tracks published to the node.
    pub published_tracks: u64,
    /// Tracks the node forwards to subscribers.
    pub forwarded_tracks: u64,
    /// The subscribers' downlink estimates added up, in bits a second.
    pub estimate_sum_bits: u64,
    /// The lowest of them (0 without subscribers).
    pub estimate_min_bits: u64,
    /// Probes of a subscriber's line started since the start.
    pub probes: u64,
    /// What the clients' lines counted since the start.
    pub line: LineReading,
    /// Video packets waiting in the pacers now.
    pub pacer_queued: u64,
    /// Packets sent to links to other nodes since the start.
    pub relayed_out: u64,
    /// Packets taken from them.
    pub relayed_in: u64,
}

/// Why the gate dropped a datagram, as the metric's label.
pub const DROP_REASONS: [&str; crate::node::gate::REASON_COUNT] = [
    "not-media",
    "unknown",
    "malformed",
    "over-budget",
    "refused",
    "relay",
    "departed",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// The node's registry and its series.
#[derive(Clone)]
pub struct NodeMetrics {
    registry: Arc<Registry>,
    packets: Family<Direction, Counter>,
    bytes: Family<Direction, Counter>,
    dropped: Family<Reason, Counter>,
    cpu: Counter<f64, std::sync::atomic::AtomicU64>,
    probes: Counter,
    lost: Family<Direction, Counter>,
    reported: Counter,
    nacks: Family<Direction, Counter>,
    retransmissions: Family<Outcome, Counter>,
    relayed: Family<Direction, Counter>,
    round_trip: Histogram,
    queued: Gauge,
    sessions: Gauge,
    rooms: Gauge,
    participants: Gauge,
    published: Gauge,
    forwarded: Gauge,
    estimate_sum: Gauge,
    estimate_min: Gauge,
    last: Arc<std::sync::Mutex<(Stats, f64)>>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeMetrics")
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::in_registry(Registry::with_prefix("treffpunkt_node"))
    }
}

impl NodeMetrics {
    /// Series that name their node (`node="…"`): for a process that runs several nodes (the
    /// shards of standalone mode) and serves their metrics as one document
    /// ([`encode_together`]).
    pub fn of_node(node_id: &str) -> Self {
        let label = (Cow::Borrowed("node"), Cow::Owned(node_id.to_owned()));
        Self::in_registry(Registry::with_prefix_and_labels(
            "treffpunkt_node",
            std::iter::once(label),
        ))
    }

    fn in_registry(mut registry: Registry) -> Self {
        let packets = Family::<Direction, Counter>::default();
        let bytes = Family::<Direction, Counter>::default();
        let dropped = Family::<Reason, Counter>::default();
        let cpu = Counter::<f64, AtomicU64>::default();
        let probes = Counter::default();
        let lost = Family::<Direction, Counter>::default();
        let reported = Counter::default();
        let nacks = Family::<Direction, Counter>::default();
        let retransmissions = Family::<Outcome, Counter>::default();
        let relayed = Family::<Direction, Counter>::default();
        let round_trip = Histogram::new(exponential_buckets(0.005, 2.0, 10));
        let queued = Gauge::default();
        let gauges: [Gauge; 7] = Default::default();
        registry.register(
            "packets",
            "Media packets received and sent",
            packets.clone(),
        );
        registry.register("bytes", "Media bytes received and sent", bytes.clone());
        registry.register(
            "dropped_datagrams",
            "Datagrams the media port dropped, by reason",
            dropped.clone(),
        );
        registry.register_with_unit("cpu", "CPU time the node used", Unit::Seconds, cpu.clone());
        registry.register("probes", "Probes of a subscriber's line", probes.clone());
        registry.register(
            "lost_packets",
            "Media packets lost on the clients' lines: up from publishers, down to subscribers",
            lost.clone(),
        );
        registry.register(
            "downlink_reported_packets",
            "Packets to subscribers that their feedback reported on, lost or not",
            reported.clone(),
        );
        registry.register(
            "nacks",
            "Retransmission requests: received from subscribers, sent to publishers",
            nacks.clone(),
        );
        registry.register(
            "retransmissions",
            "Packets asked for again by subscribers: sent again, or no longer kept",
            retransmissions.clone(),
        );
        registry.register(
            "relayed_packets",
            "Media packets of spanning rooms: sent to links to other nodes, taken from them",
            relayed.clone(),
        );
        registry.register_with_unit(
            "round_trip",
            "Round-trip times of the clients' lines, one look a second each",
            Unit::Seconds,
            round_trip.clone(),
        );
        registry.register(
            "pacer_queue_packets",
            "Video packets waiting in the pacers",
            queued.clone(),
        );
        let names = [
            ("sessions", "Sessions open"),
            ("rooms", "Rooms hosted"),
            ("participants", "Participants in the rooms"),
            ("published_tracks", "Tracks published to the node"),
            ("forwarded_tracks", "Tracks forwarded to subscribers"),
            (
                "downlink_estimate_sum_bits",
                "The subscribers' downlink estimates added up",
            ),
            (
                "downlink_estimate_min_bits",
                "The lowest downlink estimate of a subscriber",
            ),
        ];
        for ((name, help), gauge) in names.iter().zip(&gauges) {
            registry.register(*name, *help, gauge.clone());
        }
        let [
            sessions,
            rooms,
            participants,
            published,
            forwarded,
            estimate_sum,
            estimate_min,
        ] = gauges;
        Self {
            registry: Arc::new(registry),
            packets,
            bytes,
            dropped,
            cpu,
            probes,
            lost,
            reported,
            nacks,
            retransmissions,
            relayed,
            round_trip,
            queued,
            sessions,
            rooms,
            participants,
            published,
            forwarded,
            estimate_sum,
            estimate_min,
            last: Arc::default(),
        }
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl NodeMetrics {
    /// Takes in what the node counts now, the CPU seconds the process has used and the
    /// round-trip times its connections measure now.
    pub fn observe(&self, now: &Stats, cpu_seconds: f64, round_trips: &[f64]) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (before, cpu_before) = *last;
        let grow = |counter: &Counter, after: u64, before: u64| {
            counter.inc_by(after.saturating_sub(before));
        };
        let (line, line_before) = (&now.line, &before.line);
        let traffic = [
            (&self.packets, "in", now.packets_in, before.packets_in),
            (&self.packets, "out", now.packets_out, before.packets_out),
            (&self.bytes, "in", now.bytes_in, before.bytes_in),
            (&self.bytes, "out", now.bytes_out, before.bytes_out),
            (&self.lost, "up", line.uplink_lost, line_before.uplink_lost),
            (
                &self.lost,
                "down",
                line.downlink_lost,
                line_before.downlink_lost,
            ),
            (
                &self.nacks,
                "received",
                line.nacks_received,
                line_before.nacks_received,
            ),
            (&self.nacks, "sent", line.nacks_sent, line_before.nacks_sent),
            (&self.relayed, "out", now.relayed_out, before.relayed_out),
            (&self.relayed, "in", now.relayed_in, before.relayed_in),
        ];
        for (family, direction, after, before) in traffic {
            grow(
                &family.get_or_create(&Direction { direction }),
                after,
                before,
            );
        }
        for (outcome, after, before) in [
            ("sent", line.retransmitted, line_before.retransmitted),
            ("not-kept", line.not_kept, line_before.not_kept),
        ] {
            grow(
                &self.retransmissions.get_or_create(&Outcome { outcome }),
                after,
                before,
            );
        }
        for (index, reason) in DROP_REASONS.iter().enumerate() {
            let counter = self.dropped.get_or_create(&Reason { reason });
            grow(&counter, now.dropped[index], before.dropped[index]);
        }
        grow(&self.probes, now.probes, before.probes);
        grow(
            &self.reported,
            line.downlink_reported,
            line_before.downlink_reported,
        );
        for round_trip in round_trips {
            self.round_trip.observe(*round_trip);
        }
        self.queued.set(gauge(now.pacer_queued));
        if cpu_seconds > cpu_before {
            self.cpu.inc_by(cpu_seconds - cpu_before);
        }
        self.sessions.set(gauge(now.sessions));
        self.rooms.set(gauge(now.rooms));
        self.participants.set(gauge(now.participants));
        self.published.set(gauge(now.published_tracks));
        self.forwarded.set(gauge(now.forwarded_tracks));
        self.estimate_sum.set(gauge(now.estimate_sum_bits));
        self.estimate_min.set(gauge(now.estimate_min_bits));
        *last = (*now, cpu_seconds.max(cpu_before));
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = text::encode(&mut out, &self.registry);
        out
    }
}

/// The metrics of several nodes of one process as one OpenMetrics document: each metric
/// family once, with its help and type, and the samples of every node under it (a document
/// may name a family only once, so the nodes' documents cannot simply follow each other). The
/// nodes' series should name their node ([`NodeMetrics::of_node`]).
pub fn encode_together(nodes: &[&NodeMetrics]) -> String {
    // Families in the order of their first appearance, each with its header and samples.
    let mut families: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for node in nodes {
        let text = node.encode();
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if line == "# EOF" {
                break;
            }
            if let Some(meta) = line.strip_prefix("# ") {
                let mut words = meta.split(' ');
                let (_, name) = (words.next(), words.next().unwrap_or_default());
                let index = match families.iter().position(|(family, ..)| family == name) {
                    Some(index) => index,
                    None => {
                        families.push((name.to_owned(), Vec::new(), Vec::new()));
                        families.len() - 1
                    }
                };
                let header = &mut families[index].1;
                if !header.iter().any(|known| known == line) {
                    header.push(line.to_owned());
                }
                current = Some(index);
            } else if let Some(index) = current {
                families[index].2.push(line.to_owned());
            }
        }
    }
    let mut out = String::new();
    for (_, header, samples) in families {
        for line in header.iter().chain(&samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_grow_by_what_the_node_counted_since_the_last_look() {
        let metrics = NodeMetrics::default();
        let mut stats = Stats {
            packets_out: 1_000,
            bytes_out: 1_200_000,
            sessions: 2,
            participants: 2,
            rooms: 1,
            ..Stats::default()
        };
        stats.dropped[1] = 7;
        stats.line.downlink_reported = 900;
        stats.line.downlink_lost = 9;
        metrics.observe(&stats, 0.5, &[0.012]);
        stats.packets_out = 3_000;
        stats.sessions = 1;
        stats.line.downlink_reported = 1_900;
        stats.line.nacks_received = 4;
        stats.line.retransmitted = 6;
        stats.line.not_kept = 1;
        stats.pacer_queued = 12;
        metrics.observe(&stats, 0.75, &[0.02]);
        let text = metrics.encode();
        for line in [
            "treffpunkt_node_packets_total{direction=\"out\"} 3000",
            "treffpunkt_node_bytes_total{direction=\"out\"} 1200000",
            "treffpunkt_node_dropped_datagrams_total{reason=\"unknown\"} 7",
            "treffpunkt_node_cpu_seconds_total 0.75",
            "treffpunkt_node_sessions 1",
            "treffpunkt_node_rooms 1",
            "treffpunkt_node_lost_packets_total{direction=\"down\"} 9",
            "treffpunkt_node_downlink_reported_packets_total 1900",
            "treffpunkt_node_nacks_total{direction=\"received\"} 4",
            "treffpunkt_node_retransmissions_total{outcome=\"sent\"} 6",
            "treffpunkt_node_retransmissions_total{outcome=\"not-kept\"} 1",
            "treffpunkt_node_pacer_queue_packets 12",
            "treffpunkt_node_round_trip_seconds_count 2",
            "treffpunkt_node_round_trip_seconds_bucket{le=\"0.02\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn nodes_of_one_process_share_one_document_that_names_each_family_once() {
        let (first, second) = (NodeMetrics::of_node("a"), NodeMetrics::of_node("b"));
        let stats = |packets_out| Stats {
            packets_out,
            sessions: 1,
            ..Stats::default()
        };
        first.observe(&stats(10), 0.25, &[0.01]);
        second.observe(&stats(20), 0.5, &[]);
        let text = encode_together(&[&first, &second]);
        for line in [
            "treffpunkt_node_packets_total{node=\"a\",direction=\"out\"} 10",
            "treffpunkt_node_packets_total{node=\"b\",direction=\"out\"} 20",
            "treffpunkt_node_cpu_seconds_total{node=\"b\"} 0.5",
            "treffpunkt_node_sessions{node=\"a\"} 1",
            "treffpunkt_node_round_trip_seconds_count{node=\"a\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        for family in ["packets", "cpu_seconds", "sessions", "round_trip_seconds"] {
            let header = format!("# TYPE treffpunkt_node_{family} ");
            let count = text.lines().filter(|l| l.starts_with(&header)).count();
            assert_eq!(count, 1, "{header} in:\n{text}");
        }
        // The samples of a family follow its header, not another family's.
        let lines: Vec<&str> = text.lines().collect();
        let header = lines
            .iter()
            .position(|l| l.starts_with("# TYPE treffpunkt_node_sessions "));
        let sample = lines
            .iter()
            .position(|l| l.starts_with("treffpunkt_node_sessions{node=\"b\"}"));
        let next = lines
            .iter()
            .position(|l| l.starts_with("# HELP treffpunkt_node_published"));
        assert!(header < sample && sample < next, "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }
}

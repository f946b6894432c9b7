//! What the node's metrics tell of its clients' lines: loss both ways, NACKs both ways, the
//! round-trip time and the pacers' queues.
//!
//! Each connection counts from its own start (in `rtc`'s statistics and the estimate cell);
//! the node adds up what each counted since the last look, so that its totals only grow while
//! sessions come and go.

use std::time::Instant;

use rtc::statistics::StatsSelector;

use crate::session::Session;

/// What one connection has counted since it began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineReading {
    /// Packets from the client that never arrived (from the node's receiver reports).
    pub uplink_lost: u64,
    /// Packets to the client that its feedback reported on, and those it reported lost.
    pub downlink_reported: u64,
    /// Of them, lost.
    pub downlink_lost: u64,
    /// NACKs the client sent for what the node forwards.
    pub nacks_received: u64,
    /// NACKs the node sent for what the client publishes.
    pub nacks_sent: u64,
    /// Packets the node sent the client again, answering its NACKs.
    pub retransmitted: u64,
    /// Packets the client asked for that the node did not keep (sent over a second before, or
    /// probe padding).
    pub not_kept: u64,
}

impl LineReading {
    /// How much each count grew since `before` (a count never shrinks within one connection;
    /// if one seems to, it is taken as not grown).
    fn growth_since(&self, before: &Self) -> Self {
        Self {
            uplink_lost: self.uplink_lost.saturating_sub(before.uplink_lost),
            downlink_reported: self
                .downlink_reported
                .saturating_sub(before.downlink_reported),
            downlink_lost: self.downlink_lost.saturating_sub(before.downlink_lost),
            nacks_received: self.nacks_received.saturating_sub(before.nacks_received),
            nacks_sent: self.nacks_sent.saturating_sub(before.nacks_sent),
            retransmitted: self.retransmitted.saturating_sub(before.retransmitted),
            not_kept: self.not_kept.saturating_sub(before.not_kept),
        }
    }

    fn add(&mut self, other: &Self) {
        self.uplink_lost += other.uplink_lost;
        self.downlink_reported += other.downlink_reported;
        self.downlink_lost += other.downlink_lost;
        self.nacks_received += other.nacks_received;
        self.nacks_sent += other.nacks_sent;
        self.retransmitted += other.retransmitted;
        self.not_kept += other.not_kept;
    }
}

/// The node's totals since it started, and what its connections show now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineTotals {
    /// Added up over every connection, since the node started.
    pub counted: LineReading,
    /// The round-trip time of each connected session's line, in seconds, as last measured.
    pub round_trips: Vec<f64>,
    /// Video packets waiting in all pacers.
    pub queued: u64,
}

/// Reads `session`'s counts now, and its line's round-trip time when measured.
pub fn read(session: &mut Session, now: Instant) -> (LineReading, Option<f64>) {
    let report = session.pc.get_stats(now, StatsSelector::None);
    let mut reading = LineReading::default();
    for stream in report.inbound_rtp_streams() {
        let received = &stream.received_rtp_stream_stats;
        reading.uplink_lost += u64::try_from(received.packets_lost).unwrap_or(0);
        reading.nacks_sent += u64::from(stream.nack_count);
    }
    for stream in report.outbound_rtp_streams() {
        reading.nacks_received += u64::from(stream.nack_count);
    }
    (reading.downlink_reported, reading.downlink_lost) = session.estimate.reported_and_lost();
    (reading.retransmitted, reading.not_kept) = session.repairs.counts();
    let round_trip = report
        .candidate_pairs()
        .filter(|pair| pair.nominated && pair.current_round_trip_time > 0.0)
        .map(|pair| pair.current_round_trip_time)
        .next();
    (reading, round_trip)
}

impl LineTotals {
    /// Takes in a look at one session: adds what it counted since `seen` (its last reading,
    /// updated), keeps its round-trip time and pacer queue.
    pub fn take(&mut self, seen: &mut LineReading, now: LineReading, round_trip: Option<f64>) {
        self.counted.add(&now.growth_since(seen));
        *seen = now;
        self.round_trips.extend(round_trip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_only_grow_while_sessions_come_and_go() {
        let mut totals = LineTotals::default();
        let mut anna = LineReading::default();
        let mut ben = LineReading::default();
        let reading = |lost, nacks| LineReading {
            downlink_reported: 100 * lost,
            downlink_lost: lost,
            nacks_received: nacks,
            ..LineReading::default()
        };
        totals.take(&mut anna, reading(3, 2), Some(0.02));
        totals.take(&mut ben, reading(1, 0), None);
        assert_eq!(totals.counted.downlink_lost, 4);
        // Anna counts on; Ben leaves, and a new session starts counting from zero.
        totals.take(&mut anna, reading(5, 2), Some(0.03));
        let mut carla = LineReading::default();
        totals.take(&mut carla, reading(1, 1), None);
        assert_eq!(totals.counted.downlink_lost, 7);
        assert_eq!(totals.counted.nacks_received, 3);
        assert_eq!(totals.counted.downlink_reported, 700);
        assert_eq!(totals.round_trips, [0.02, 0.03]);
    }
}

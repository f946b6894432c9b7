//! The downlink estimate of one subscriber: how many bits per second the node can send it.
//!
//! The subscriber's client reports, in transport-wide congestion control feedback, when each
//! packet the node sent arrived. From those reports the delay-based half of GCC (the arrival
//! groups, the trend filter and the overuse detector of `rtc`) says whether a queue is building
//! on the path, and the loss fraction says whether packets vanish. The rate control on top is the
//! node's own, tuned for a forwarder rather than an encoder:
//!
//! - on overuse the estimate falls at once to a little below what actually arrived, and on heavy
//!   loss to what arrived less half the loss (never further: loss that lingers in the average
//!   after a burst must not drive the estimate below what the path delivers);
//! - after a fall it holds for a moment, so the queue drains before the next reading counts;
//! - then it grows by 40 % a second while the path stays quiet (in a connection's first seconds,
//!   until the line first shows a queue or loss, it doubles every second, so that a joiner's videos
//!   start together), up to a little above what arrived. Beyond that it rises only on the word of a
//!   probe: padding sent for a moment at the rate the node's next improvement needs (see
//!   [`super::probe`]). A line that carried the probe gets the improvement; a line that did not is
//!   left alone, and the next probe waits longer. (Before the node probed, moving a video up a
//!   layer was the probe, its keyframe burst filled a thin line's queue, and the audio behind it
//!   was lost.)
//!
//! The estimate is published through a shared cell that the node reads every tick; the cell
//! also carries what the node's metrics tell of the line: the packets the feedback reported and
//! those it reported lost, and how many packets wait in the pacer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    BandwidthEstimator, OveruseDetector, PacketReport, RateCalculator, SlopeEstimator, Usage,
};

use super::probe::{Outcome, ProbeRequest, ProbeSent, Prober};

/// The filtered delay trend is scaled by this before it meets the overuse threshold. Unscaled,
/// a queue must grow by about 40 % of the send rate before the detector notices (measured on a
/// 400 kbit/s line, where it never fired and loss did all the work); libwebrtc scales its trend
/// in the same way.
const TREND_GAIN: f64 = 4.0;
/// Where a new connection's estimate starts.
pub const INITIAL: f64 = 1_000_000.0;
/// The estimate never falls below this: a line this thin carries the others' audio and no video,
/// and an estimate that collapsed further (feedback that arrives late on a congested uplink
/// reads as a low received rate) would take many seconds to climb back.
const MIN: f64 = 150_000.0;
/// One decrease takes off at most this share of the estimate.
const MAX_DECREASE: f64 = 0.5;
/// The shortest time between two decreases for overuse: each must be seen to work first.
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);
/// The estimate never rises above this: only a bound on arithmetic, far above any line a
/// participant has. What limits the estimate is what arrives and what probes show (a ceiling
/// of 20 Mbit/s once kept a 16 Mbit/s stream, which needs a quarter more to start, from ever
/// being sent).
const MAX: f64 = 1_000_000_000.0;
/// What the estimate falls to on overuse, as a share of what arrived.
const BACKOFF: f64 = 0.85;
/// How long the estimate holds after it fell.
const HOLD: Duration = Duration::from_secs(1);
/// Growth per second while the path is quiet.
const GROWTH_PER_SECOND: f64 = 1.4;
/// Growth per second in a connection's first seconds ([`STARTUP`]) until the line first shows
/// a queue or loss: a joiner's videos start within a second or two instead of coming one by
/// one over five, and the first sign of a full line ends it.
const SLOW_START_GROWTH_PER_SECOND: f64 = 2.0;
/// Growth on its own is capped at what arrived times this, plus [`HEADROOM`]: beyond that the
/// estimate rises only when a probe showed the line carries more (see [`super::probe`]), or
/// towards what the node sends already (videos that never played go out before they fit; see
/// [`EstimateCell::set_floor`]), or, when the node has nothing to probe with, towards what its
/// next improvement needs. A cap far
/// above what arrives let a full thin line look like a megabit, and the node paced its video
/// (and moved it up) into a line that could not take it.
const RECEIVED_FACTOR: f64 = 1.5;
const HEADROOM: f64 = 100_000.0;
/// How long the estimate may grow without probes after the node had nothing to probe with.
const UNPROBED: Duration = Duration::from_secs(3);
/// The first seconds of a connection the estimate grows towards what the node wants without
/// probes, as it did before the node probed: while the subscriber's client is still setting up, the
/// arrivals it reports are too uneven to judge a probe by (measured: probes on loopback at join
/// read 30 % slower than they left), and a meeting's videos would start paused.
const STARTUP: Duration = Duration::from_secs(8);
/// How often the estimator looks at its line when no feedback wakes it.
const TICK: Duration = Duration::from_millis(500);
/// A line with no feedback for this long carries nothing the node sent: no reports come to ask
/// for a probe from, so the tick asks (see [`DownlinkEstimator`]'s `handle_timeout`).
const QUIET: Duration = Duration::from_secs(1);
/// Loss above this fraction lowers the estimate; below [`LOW_LOSS`] it may grow.
const HIGH_LOSS: f64 = 0.10;
const LOW_LOSS: f64 = 0.02;
/// The shortest time between two loss-based decreases.
const LOSS_INTERVAL: Duration = Duration::from_millis(200);
/// A loss-based decrease keeps at least this share of what arrives.
const LOSS_FLOOR: f64 = 0.75;

/// The latest estimate of one connection, in bits per second, shared with the node, how far
/// the node would like it to grow, and the exchange of line probes between the estimator (which
/// asks for them and reads their feedback), the node (which makes the padding) and the pacer
/// (which sends it).
#[derive(Clone, Debug)]
pub struct EstimateCell(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    estimate: AtomicU64,
    wanted: AtomicU64,
    floor: AtomicU64,
    /// Bits per second of padding the pacer sends while it has probe padding.
    padding_rate: AtomicU64,
    probe: Mutex<ProbeExchange>,
    /// Packets the subscriber's feedback reported on, and those it reported lost, so far.
    reported: AtomicU64,
    lost: AtomicU64,
    /// Video packets waiting in the pacer.
    queued: AtomicU64,
}

#[derive(Debug, Default)]
struct ProbeExchange {
    /// Asked for by the estimator, not yet taken by the node.
    requested: Option<ProbeRequest>,
    /// What became of the last request, not yet read by the estimator.
    outcome: Option<ProbeSent>,
}

impl EstimateCell {
    /// A cell holding the initial estimate.
    pub fn new() -> Self {
        Self(Arc::new(Shared {
            estimate: AtomicU64::new(INITIAL as u64),
            wanted: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            padding_rate: AtomicU64::new(0),
            probe: Mutex::new(ProbeExchange::default()),
            reported: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            queued: AtomicU64::new(0),
        }))
    }

    /// Packets the subscriber's feedback reported on and those it reported lost, since the
    /// connection began.
    pub fn reported_and_lost(&self) -> (u64, u64) {
        (
            self.0.reported.load(Ordering::Relaxed),
            self.0.lost.load(Ordering::Relaxed),
        )
    }

    fn count_reports(&self, reported: usize, lost: usize) {
        self.0
            .reported
            .fetch_add(reported as u64, Ordering::Relaxed);
        self.0.lost.fetch_add(lost as u64, Ordering::Relaxed);
    }

    /// Video packets waiting in the pacer now.
    pub fn queued(&self) -> u64 {
        self.0.queued.load(Ordering::Relaxed)
    }

    pub(crate) fn set_queued(&self, packets: usize) {
        self.0.queued.store(packets as u64, Ordering::Relaxed);
    }

    /// The latest estimate.
    pub fn get(&self) -> u64 {
        self.0.estimate.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, bits_per_second: f64) {
        self.0
            .estimate
            .store(bits_per_second as u64, Ordering::Relaxed);
    }

    /// What the node's next improvement for this subscriber would need (0 for nothing): the
    /// estimator probes the line for it.
    pub fn set_wanted(&self, bits_per_second: Option<u64>) {
        self.0
            .wanted
            .store(bits_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    /// What the media the node sends this subscriber already needs, when that is more than the
    /// estimate (0 for nothing): the estimate may grow that far without a probe.
    pub fn set_floor(&self, bits_per_second: Option<u64>) {
        self.0
            .floor
            .store(bits_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    fn floor(&self) -> f64 {
        self.0.floor.load(Ordering::Relaxed) as f64
    }

    fn wanted(&self) -> f64 {
        self.0.wanted.load(Ordering::Relaxed) as f64
    }

    fn exchange(&self) -> std::sync::MutexGuard<'_, ProbeExchange> {
        // The exchange holds plain values: a panic elsewhere cannot leave it half-written.
        self.0
            .probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn request_probe(&self, request: ProbeRequest) {
        self.0
            .padding_rate
            .store(request.padding_rate as u64, Ordering::Relaxed);
        let mut exchange = self.exchange();
        exchange.requested = Some(request);
        exchange.outcome = None;
    }

    /// The probe the estimator asks for, if any: the node sends that many padding packets on
    /// one of the subscriber's video down-tracks, or reports [`Self::probe_unavailable`].
    pub fn take_probe_request(&self) -> Option<ProbeRequest> {
        self.exchange().requested.take()
    }

    /// The node has no down-track to send probe padding on.
    pub fn probe_unavailable(&self) {
        self.exchange().outcome = Some(ProbeSent::Unavailable);
    }

    /// How fast the pacer sends probe padding.
    pub(crate) fn padding_rate(&self) -> f64 {
        self.0.padding_rate.load(Ordering::Relaxed) as f64
    }

    /// The pacer sent a probe's padding between `first` and `last`.
    pub(crate) fn probe_sent(&self, first: Instant, last: Instant) {
        self.exchange().outcome = Some(ProbeSent::Window(first, last));
    }

    pub(crate) fn take_probe_outcome(&self) -> Option<ProbeSent> {
        self.exchange().outcome.take()
    }
}

impl Default for EstimateCell {
    fn default() -> Self {
        Self::new()
    }
}

/// The estimator of one subscriber connection.
pub struct DownlinkEstimator {
    slope: SlopeEstimator,
    detector: OveruseDetector,
    received: RateCalculator,
    /// Whether any packet has arrived yet: losses before the first arrival do not count.
    heard: bool,
    average_loss: Option<f64>,
    target: f64,
    last_decrease: Option<Instant>,
    last_update: Option<Instant>,
    prober: Prober,
    /// Until then the estimate may grow towards what the node wants without a probe: the node
    /// had nothing to probe with.
    unprobed_until: Option<Instant>,
    /// When the first feedback (or tick) came: the connection's [`STARTUP`] runs from here.
    first_report: Option<Instant>,
    /// When the estimator looks at its line next without feedback; `None` until the
    /// connection's first timeout (the connection's own timers start the tick).
    next_tick: Option<Instant>,
    cell: EstimateCell,
}

impl DownlinkEstimator {
    /// An estimator that publishes into `cell`.
    pub fn new(cell: EstimateCell) -> Self {
        cell.set(INITIAL);
        Self {
            slope: SlopeEstimator::new(),
            detector: OveruseDetector::new(),
            received: RateCalculator::default(),
            heard: false,
            average_loss: None,
            target: INITIAL,
            last_decrease: None,
            last_update: None,
            prober: Prober::default(),
            unprobed_until: None,
            first_report: None,
            next_tick: None,
            cell,
        }
    }

    /// The loss fraction of `reports` and its running average. What was lost before the first
    /// packet arrived says nothing of the line: its receiver was not listening yet (its
    /// connection still coming up). Counted, it ended a joiner's fast start at once and held its
    /// estimate for the best part of a second.
    fn loss(&mut self, reports: &[PacketReport]) -> (f64, f64) {
        let first_heard = match self.heard {
            true => Some(0),
            false => reports.iter().position(|report| report.arrived),
        };
        self.heard |= first_heard.is_some();
        let counted = first_heard.map_or(&[][..], |first| &reports[first..]);
        let lost = counted.iter().filter(|report| !report.arrived).count();
        let sample = lost as f64 / counted.len().max(1) as f64;
        let loss = match self.average_loss {
            previous if counted.is_empty() => previous.unwrap_or(0.0),
            Some(previous) => 0.8 * previous + 0.2 * sample,
            None => sample,
        };
        if !counted.is_empty() {
            self.average_loss = Some(loss);
        }
        (loss, sample)
    }

    fn decrease_to(&mut self, now: Instant, target: f64) {
        if target < self.target {
            self.target = target.clamp(MIN, MAX);
            self.last_decrease = Some(now);
            self.prober.estimate_fell(now);
        }
    }
}

impl BandwidthEstimator for DownlinkEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.unprobed_until.get_or_insert(now + STARTUP);
        self.first_report.get_or_insert(now);
        let sent = self.cell.take_probe_outcome();
        match self.prober.on_reports(now, reports, sent, self.target) {
            Some(Outcome::Carried(rate)) => self.target = self.target.max(rate).min(MAX),
            Some(Outcome::Unavailable) => {
                self.unprobed_until = self.unprobed_until.max(Some(now + UNPROBED));
            }
            Some(Outcome::Failed(_) | Outcome::Short(_)) | None => {}
        }
        if reports.is_empty() {
            return;
        }
        let mut usage = self.detector.usage();
        for report in reports {
            if report.arrived {
                self.received.add(now, report.size);
            }
            if let Some(trend) = self.slope.accumulate(report) {
                usage = self
                    .detector
                    .update(trend.at, trend.estimate_ms * TREND_GAIN);
            }
        }
        let received = self.received.rate_bits_per_second(now);
        let lost = reports.iter().filter(|report| !report.arrived).count();
        self.cell.count_reports(reports.len(), lost);
        let (loss, sample) = self.loss(reports);
        let elapsed = self
            .last_update
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last))
            .min(Duration::from_secs(1));
        self.last_update = Some(now);
        let holding = self
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < HOLD);
        let decreased_recently = self
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < DECREASE_INTERVAL);
        if usage == Usage::Over {
            if let Some(received) = received
                && !decreased_recently
            {
                let floor = self.target * (1.0 - MAX_DECREASE);
                self.decrease_to(now, (received * BACKOFF).max(floor));
            }
        } else if loss.min(sample) > HIGH_LOSS {
            let recent = self
                .last_decrease
                .is_some_and(|at| now.saturating_duration_since(at) < LOSS_INTERVAL);
            if !recent {
                let base = received.map_or(self.target, |received| received.min(self.target));
                // Loss lingers in the average after the rate fell: never below most of what
                // still arrives.
                let floor = (self.target * (1.0 - MAX_DECREASE))
                    .max(received.map_or(0.0, |received| received * LOSS_FLOOR));
                self.decrease_to(now, (base * (1.0 - 0.5 * loss)).max(floor));
            }
        } else if usage == Usage::Normal
            && !holding
            && loss.max(sample) < LOW_LOSS.max(HIGH_LOSS / 2.0)
        {
            let unprobed = self.unprobed_until.is_some_and(|until| now < until);
            // No decrease yet, in the connection's first seconds.
            let in_startup = self.last_decrease.is_none()
                && self
                    .first_report
                    .is_some_and(|first| now.saturating_duration_since(first) < STARTUP);
            let growth = if in_startup {
                SLOW_START_GROWTH_PER_SECOND
            } else {
                GROWTH_PER_SECOND
            };
            let grown = self.target * growth.powf(elapsed.as_secs_f64());
            let cap = received.map_or(MAX, |received| {
                let cap = (received * RECEIVED_FACTOR + HEADROOM).max(self.cell.floor());
                if unprobed {
                    cap.max(self.cell.wanted())
                } else {
                    cap
                }
            });
            if grown > self.target {
                self.target = grown.min(cap.max(self.target)).clamp(MIN, MAX);
            }
            // Not while the estimate grows without probes anyway: in a connection's first
            // seconds their verdict is unreliable, and a livestream's hundreds of viewers all
            // joining at once would all probe at once.
            if !unprobed
                && let Some(request) = self.prober.due(
                    now,
                    self.target,
                    received.unwrap_or(0.0),
                    self.cell.wanted(),
                )
            {
                self.cell.request_probe(request);
            }
        }
        tracing::trace!(
            target = self.target as u64,
            received = received.unwrap_or(0.0) as u64,
            loss = format!("{loss:.3}"),
            sample = format!("{sample:.3}"),
            ?usage,
            "downlink estimate"
        );
        self.cell.set(self.target);
    }

    fn target_bitrate(&self) -> f64 {
        self.target
    }

    /// Feedback comes only for what the node sent: a subscriber whose only stream is a video
    /// that never played (everyone else muted, or a screen share above the starting estimate)
    /// gets nothing, reports nothing, and would never be probed. So the estimator looks at its
    /// line on a tick too: it settles a probe request the node answered (or never did), and on
    /// a line quiet for `QUIET` it asks for a probe itself, which the node sends as padding
    /// on that video (its feedback then judges the probe as any other).
    fn handle_timeout(&mut self, now: Instant) {
        if self.next_tick.is_some_and(|at| now < at) {
            return;
        }
        self.next_tick = Some(now + TICK);
        self.on_reports(now, &[]);
        let quiet = self
            .last_update
            .is_none_or(|at| now.saturating_duration_since(at) >= QUIET);
        if quiet && let Some(request) = self.prober.due(now, self.target, 0.0, self.cell.wanted()) {
            self.cell.request_probe(request);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }
}

#[cfg(test)]
mod tests;

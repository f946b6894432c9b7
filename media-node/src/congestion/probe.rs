//! Probing a subscriber's line before the node sends it more.
//!
//! The node cannot see a subscriber's line; it sees what arrived, in transport-wide congestion
//! control feedback. To learn whether the line would carry more than it carries now, the node
//! sends more for a moment and watches how it arrives. Doing that with media (moving a video up
//! a layer) starts with a keyframe burst, and on a thin line the burst fills the bottleneck's
//! queue and the audio behind it is lost. So the node probes with padding instead:
//!
//! - the estimator asks for a probe when the node's next improvement for the subscriber (a
//!   paused video resumed, a video moved up) needs more than the estimate; it probes for at most
//!   `STEP` times what it has, so a thin line is never asked for many times its size at once;
//! - the node sends padding-only RTP packets on one of the subscriber's video down-tracks (their
//!   sequence numbers continue the stream, and the browser drops them without a gap) for
//!   [`DURATION`], the pacer spreading them at the rate that brings the total to the probed rate;
//! - from the feedback for everything sent in that window (media and padding, in the order they
//!   left), it compares the rate the window left at with the rate it arrived at: a bottleneck
//!   spreads the arrivals, and a full queue drops some;
//! - if it arrived as it left (and little was lost), the estimate rises to the rate shown (the
//!   rate probed for, or what actually left when that fell well short) and the node may make
//!   the improvement; if not, or if it showed no more than the estimate, the next probe waits,
//!   twice as long after every failure, up to `MAX_BACKOFF`.
//!
//! A probe of 40 ms cannot see past a shaper's bucket (a token bucket lets a short burst through
//! at full speed); the node's moves up stay cautious for that reason (see the core's
//! publications), but the probe no longer is the move up. Behind such a shaper a probe is
//! carried, the node moves up, and the estimate falls again within seconds. A fall that soon
//! after a carried probe counts against probing: the next probe waits 4 s, twice as long each
//! time it happens again, up to 32 s, so a thin line behind a bucket is not given a video it
//! cannot carry every few seconds (measured in the browser tests' weak line: a video moved up
//! twice in 10 s). A carried probe whose rate then holds for that long resets the wait.
//!
//! A video down-track that never played is padded too (its sequence starts with the padding),
//! and a line that carries nothing yet is probed from the estimator's tick, since no feedback
//! comes to ask from. Only a subscriber with no video down-track the node can send on has
//! nothing to pad; then the estimate grows as it did without probes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

/// Bytes of filler a large padding packet carries in a header-extension element of its own.
///
/// RTP's own padding cannot be made larger through the RTP stack the node uses (it pads to the
/// next 4 bytes), and padding packets of 62 bytes made a probe of a fast line tens of thousands
/// of packets a second, more than receivers and home routers take (measured: a probe for
/// 40 Mbit/s was 3,300 packets in 40 ms, and its receivers lost 70-95 % of them). So a probe
/// that would need more than `MAX_SMALL_PACKETS` small packets sends large ones: the filler
/// goes into a two-byte header-extension element with an id the node never negotiates, which
/// receivers skip (RFC 8285), and a padding packet is about 300 bytes on the wire, like the
/// padding other WebRTC senders send. A probe of a thin line keeps its small packets: a few
/// large ones measured the line too coarsely (a subscriber on a 400 kbit/s line was moved up and
/// paused again, and moved up late once the line cleared).
pub const PADDING_FILL: usize = 250;
/// The header-extension id of the filler; extension ids negotiated in SDP stay far below it.
pub const PADDING_EXTENSION_ID: u8 = 255;
/// A probe needing more small padding packets than this sends large ones.
const MAX_SMALL_PACKETS: f64 = 100.0;

/// Bytes a padding packet with `fill` bytes of filler (0 or [`PADDING_FILL`]) takes on the
/// wire: RTP header; the extension block (one-byte form with the transport-wide sequence number
/// alone, or two-byte form with the filler as well, each a multiple of 4); 4 bytes of RTP
/// padding; SRTP's tag, UDP and IPv4.
pub const fn padding_packet_bytes(fill: usize) -> usize {
    let extensions = if fill == 0 {
        4 + 4
    } else {
        4 + (2 + 2 + 2 + fill).next_multiple_of(4)
    };
    12 + extensions + 4 + OVERHEAD
}

/// Bytes per packet below RTP: SRTP's authentication tag, UDP and IPv4 headers.
const OVERHEAD: usize = 10 + 8 + 20;
/// How long one probe sends padding.
pub const DURATION: Duration = Duration::from_millis(40);
/// Fewer packets than this in a probe's window say nothing.
const MIN_PACKETS: usize = 8;
/// A probe asks for at most this multiple of the current estimate (or of what arrives).
const STEP: f64 = 2.0;
/// A probe asks for this much more than the step it is for: the layers' measured bitrates move
/// a little from one second to the next, and a probe that carried exactly what the step cost
/// left it out of reach when the cost rose by a hair (measured: a subscriber whose line had
/// cleared waited for a second probe, 1.2 s later).
const MARGIN: f64 = 1.1;
/// Padding makes up at least this share of the probed rate, so a probe is never empty.
const MIN_PADDING_SHARE: f64 = 0.25;
/// A probe that arrived at this share of the rate it left at was carried.
const CARRIED_SHARE: f64 = 0.9;
/// A probe that left at this share of the rate probed for showed that rate.
const SENT_SHARE: f64 = 0.85;
/// A probe that lost more than this share of its packets failed, whatever its rate.
const MAX_LOSS: f64 = 0.1;
/// The time between a successful probe and the next.
const INTERVAL: Duration = Duration::from_secs(1);
/// The wait after the first failed probe; it doubles with every further failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// At most this long: a probe costs a thin line at most some 50 ms of queue, and a line that
/// cleared should be found soon.
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// A fall of the estimate within this time of a carried probe says the probe saw less than the
/// line: a shaper's bucket let it through, and the move up it allowed did not hold.
const BORNE_OUT: Duration = Duration::from_secs(5);
/// The wait after the first carried probe that the line did not bear out; it doubles every
/// time again.
const FIRST_UNBORNE_BACKOFF: Duration = Duration::from_secs(4);
/// At most this long: what a move up that fails costs (a keyframe at the higher layer, loss
/// and a frozen picture while it falls back) is worth a long wait, not a line lost for good.
const MAX_UNBORNE_BACKOFF: Duration = Duration::from_secs(32);
/// A request the node has not answered in this time is given up.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// A probe whose feedback has not come in this time is judged on what came.
const FEEDBACK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long reports are kept for judging a probe.
const HISTORY: Duration = Duration::from_secs(3);

/// Padding the estimator asks the node to send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeRequest {
    /// How fast the pacer sends the padding, in bits per second on the wire.
    pub padding_rate: f64,
    /// How many padding packets to send.
    pub packets: u16,
    /// Bytes of filler in each (see [`PADDING_FILL`]).
    pub fill: usize,
}

/// What became of a probe request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeSent {
    /// The pacer sent the padding between these instants.
    Window(Instant, Instant),
    /// The node had no down-track to send it on.
    Unavailable,
}

/// What a probe showed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// The line carried what was sent, this many bits per second (at most the rate probed for;
    /// less when less was sent).
    Carried(f64),
    /// It did not; the rate it carried, when that could be measured.
    Failed(Option<f64>),
    /// The line carried all that was sent, but the node sent less than asked for, and no more
    /// than the estimate already was (its pacer ran late: a busy machine): the line was not
    /// tried, and is tried again after the usual interval, not after a failure's backoff.
    Short(f64),
    /// No probe could be sent.
    Unavailable,
}

/// One packet as the feedback reported it.
#[derive(Clone, Copy, Debug)]
struct Sent {
    departure: Instant,
    arrival: Option<Duration>,
    bytes: usize,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Idle,
    Asked {
        at: Instant,
        rate: f64,
    },
    Measuring {
        rate: f64,
        first: Instant,
        last: Instant,
        deadline: Instant,
    },
}

/// The probing half of one subscriber's estimator.
#[derive(Debug)]
pub struct Prober {
    state: State,
    history: VecDeque<Sent>,
    not_before: Option<Instant>,
    backoff: Duration,
    /// When the last probe was carried, until the estimate held for [`BORNE_OUT`] after it
    /// or fell.
    carried_at: Option<Instant>,
    /// The wait after the next carried probe that the line does not bear out.
    unborne_backoff: Duration,
}

impl Default for Prober {
    fn default() -> Self {
        Self {
            state: State::Idle,
            history: VecDeque::new(),
            not_before: None,
            backoff: FIRST_BACKOFF,
            carried_at: None,
            unborne_backoff: FIRST_UNBORNE_BACKOFF,
        }
    }
}

impl Prober {
    /// Whether a probe is asked for or under way.
    pub fn busy(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// The estimate fell at `now`. Within 5 s of a carried probe that makes the next probe
    /// wait (see the module's documentation and [`Self::due`]).
    pub fn estimate_fell(&mut self, now: Instant) {
        self.settle(now);
        if self.carried_at.take().is_some() {
            let until = now + self.unborne_backoff;
            self.not_before = Some(self.not_before.map_or(until, |at| at.max(until)));
            self.unborne_backoff = (self.unborne_backoff * 2).min(MAX_UNBORNE_BACKOFF);
            tracing::debug!(
                wait_ms = (until - now).as_millis() as u64,
                "the estimate fell soon after a carried probe"
            );
        }
    }

    /// Forgets a carried probe whose rate held for [`BORNE_OUT`]: the line bore it out.
    fn settle(&mut self, now: Instant) {
        if self
            .carried_at
            .is_some_and(|at| now.saturating_duration_since(at) >= BORNE_OUT)
        {
            self.carried_at = None;
            self.unborne_backoff = FIRST_UNBORNE_BACKOFF;
        }
    }

    /// The rate to probe for, and the request for the node, when a probe is due: the estimate
    /// is `estimate`, `received` arrives now, and the next improvement needs `wanted`.
    pub fn due(
        &mut self,
        now: Instant,
        estimate: f64,
        received: f64,
        wanted: f64,
    ) -> Option<ProbeRequest> {
        self.settle(now);
        if self.busy() || wanted <= estimate || self.not_before.is_some_and(|at| now < at) {
            return None;
        }
        let rate = (wanted * MARGIN).min(STEP * estimate.max(received));
        // Video comes in bursts, a frame at a time: counting on only half of what arrives on
        // average leaves the total at or a little above the rate probed for.
        let padding_rate = (rate - received / 2.0).max(rate * MIN_PADDING_SHARE);
        let bytes = padding_rate / 8.0 * DURATION.as_secs_f64();
        let fill = if bytes / padding_packet_bytes(0) as f64 > MAX_SMALL_PACKETS {
            PADDING_FILL
        } else {
            0
        };
        let packets = ((bytes / padding_packet_bytes(fill) as f64).ceil() as usize)
            .clamp(MIN_PACKETS, usize::from(u16::MAX)) as u16;
        self.state = State::Asked { at: now, rate };
        Some(ProbeRequest {
            padding_rate,
            packets,
            fill,
        })
    }

    /// Takes in a feedback's reports and what the node and pacer did with the request; returns
    /// the probe's outcome once it is known. A probe that showed no more than `estimate` failed.
    pub fn on_reports(
        &mut self,
        now: Instant,
        reports: &[PacketReport],
        sent: Option<ProbeSent>,
        estimate: f64,
    ) -> Option<Outcome> {
        // Reports matter only while a probe is asked for or under way: its window leaves after
        // the request.
        if matches!(self.state, State::Idle) {
            self.history.clear();
            return None;
        }
        self.history.extend(reports.iter().map(|report| Sent {
            departure: report.departure,
            arrival: report.arrival.filter(|_| report.arrived),
            bytes: report.size + OVERHEAD,
        }));
        while self
            .history
            .front()
            .is_some_and(|sent| now.saturating_duration_since(sent.departure) > HISTORY)
        {
            self.history.pop_front();
        }
        match self.state {
            State::Idle => None,
            State::Asked { at, rate } => match sent {
                Some(ProbeSent::Window(first, last)) => {
                    self.state = State::Measuring {
                        rate,
                        first,
                        last,
                        deadline: now + FEEDBACK_TIMEOUT,
                    };
                    self.judge(now, estimate)
                }
                Some(ProbeSent::Unavailable) => Some(self.unavailable(now)),
                None if now.saturating_duration_since(at) > ASK_TIMEOUT => {
                    Some(self.unavailable(now))
                }
                None => None,
            },
            State::Measuring { .. } => self.judge(now, estimate),
        }
    }

    fn unavailable(&mut self, now: Instant) -> Outcome {
        self.state = State::Idle;
        self.not_before = Some(now + INTERVAL);
        Outcome::Unavailable
    }

    /// Judges the probe under way once the feedback covers its window.
    fn judge(&mut self, now: Instant, estimate: f64) -> Option<Outcome> {
        let State::Measuring {
            rate,
            first,
            last,
            deadline,
        } = self.state
        else {
            return None;
        };
        let covered = self.history.iter().any(|sent| sent.departure >= last);
        if !covered && now < deadline {
            return None;
        }
        self.state = State::Idle;
        let window: Vec<Sent> = self
            .history
            .iter()
            .filter(|sent| (first..=last).contains(&sent.departure))
            .copied()
            .collect();
        let rates = measure(&window);
        let outcome = match rates {
            Some(rates)
                if rates.loss <= MAX_LOSS && rates.received >= CARRIED_SHARE * rates.sent =>
            {
                // A window of 40 ms measures the rate to within some 10 %: near enough counts.
                let shown = if rates.sent >= SENT_SHARE * rate {
                    rate
                } else {
                    rates.sent
                };
                if shown > estimate {
                    Outcome::Carried(shown)
                } else if shown < rate {
                    Outcome::Short(rates.sent)
                } else {
                    Outcome::Failed(Some(rates.received))
                }
            }
            Some(rates) => Outcome::Failed(Some(rates.received)),
            None => Outcome::Failed(None),
        };
        tracing::debug!(?outcome, probed = rate as u64, ?rates, "probe");
        if matches!(outcome, Outcome::Carried(_)) {
            self.settle(now);
            self.carried_at = Some(now);
            self.backoff = FIRST_BACKOFF;
            self.not_before = Some(now + INTERVAL);
        } else if matches!(outcome, Outcome::Short(_)) {
            self.not_before = Some(now + INTERVAL);
        } else {
            self.not_before = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        Some(outcome)
    }
}

/// How a window of packets went.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rates {
    /// The rate it left at, bits per second.
    sent: f64,
    /// The rate it arrived at: a bottleneck spreads the arrivals.
    received: f64,
    /// The share of its packets lost.
    loss: f64,
}

/// How a window of packets went; `None` when it says too little.
fn measure(window: &[Sent]) -> Option<Rates> {
    if window.len() < MIN_PACKETS {
        return None;
    }
    let lost = window.iter().filter(|sent| sent.arrival.is_none()).count();
    let loss = lost as f64 / window.len() as f64;
    let mut departures: Vec<(Instant, usize)> = window
        .iter()
        .map(|sent| (sent.departure, sent.bytes))
        .collect();
    departures.sort_by_key(|(at, _)| *at);
    let mut arrivals: Vec<(Duration, usize)> = window
        .iter()
        .filter_map(|sent| Some((sent.arrival?, sent.bytes)))
        .collect();
    arrivals.sort_by_key(|(at, _)| *at);
    let (Some(&(sent_first, _)), Some(&(sent_last, _))) = (departures.first(), departures.last())
    else {
        return None;
    };
    let (Some(&(arrived_first, _)), Some(&(arrived_last, _))) = (arrivals.first(), arrivals.last())
    else {
        return Some(Rates {
            sent: 0.0,
            received: 0.0,
            loss,
        });
    };
    // A rate over n packets counts the bytes of n - 1 of them: those that left after the first
    // one started, and those that arrived after the first one was through.
    let floor = Duration::from_millis(1);
    let sent_bits = departures[..departures.len() - 1]
        .iter()
        .map(|(_, bytes)| *bytes as f64 * 8.0)
        .sum::<f64>();
    let send_rate = sent_bits / (sent_last - sent_first).max(floor).as_secs_f64();
    let arrived_bits = arrivals[1..]
        .iter()
        .map(|(_, bytes)| *bytes as f64 * 8.0)
        .sum::<f64>();
    let receive_rate = arrived_bits / (arrived_last - arrived_first).max(floor).as_secs_f64();
    Some(Rates {
        sent: send_rate,
        received: receive_rate,
        loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: Instant, gaps_us: (u64, u64), count: usize, bytes: usize) -> Vec<Sent> {
        (0..count as u64)
            .map(|i| Sent {
                departure: start + Duration::from_micros(i * gaps_us.0),
                arrival: Some(Duration::from_millis(500) + Duration::from_micros(i * gaps_us.1)),
                bytes,
            })
            .collect()
    }

    #[test]
    fn a_bottleneck_shows_in_the_spread_of_arrivals() {
        let start = Instant::now();
        // 1000-byte packets leave every 4 ms (2 Mbit/s) and arrive every 8 ms (1 Mbit/s).
        let rates = measure(&window(start, (4_000, 8_000), 20, 1000)).unwrap();
        assert!((rates.sent - 2_000_000.0).abs() < 1_000.0, "{rates:?}");
        assert!((rates.received - 1_000_000.0).abs() < 1_000.0, "{rates:?}");
        assert_eq!(rates.loss, 0.0);
        // An open line: arrivals as spread as departures.
        let rates = measure(&window(start, (4_000, 4_000), 20, 1000)).unwrap();
        assert!((rates.received - 2_000_000.0).abs() < 1_000.0, "{rates:?}");
        // Too few packets say nothing.
        assert_eq!(measure(&window(start, (4_000, 4_000), 3, 1000)), None);
    }

    #[test]
    fn lost_packets_count_against_the_probe() {
        let start = Instant::now();
        let mut sent = window(start, (4_000, 4_000), 20, 1000);
        for packet in sent.iter_mut().step_by(4) {
            packet.arrival = None;
        }
        let rates = measure(&sent).unwrap();
        assert!((rates.loss - 0.25).abs() < 1e-9);
    }

    fn reports(sent: &[Sent]) -> Vec<PacketReport> {
        sent.iter()
            .enumerate()
            .map(|(i, sent)| PacketReport {
                ssrc: 1,
                id: i as u64,
                rtp_sequence_number: i as u16,
                is_twcc: true,
                twcc_sequence_number: i as u16,
                size: sent.bytes - OVERHEAD,
                arrived: sent.arrival.is_some(),
                departure: sent.departure,
                arrival: sent.arrival,
                ecn: Default::default(),
            })
            .collect()
    }

    /// A probe asked for at `now`: 20 packets of 200 bytes leave 2 ms apart (800 kbit/s) and
    /// arrive `arrival_gap_us` apart; the feedback comes 100 ms later. Its outcome.
    fn probe(prober: &mut Prober, now: Instant, arrival_gap_us: u64, estimate: f64) -> Outcome {
        let sent = window(now, (2_000, arrival_gap_us), 20, 200);
        let later = window(now + Duration::from_millis(60), (1_000, 1_000), 1, 200);
        let window = ProbeSent::Window(now, now + Duration::from_millis(38));
        assert_eq!(
            prober.on_reports(now, &[], Some(window), estimate),
            None,
            "no verdict before the feedback"
        );
        let reports = reports(&[sent, later].concat());
        prober
            .on_reports(now + Duration::from_millis(100), &reports, None, estimate)
            .expect("a verdict once the feedback covers the window")
    }

    #[test]
    fn a_failed_probe_waits_longer_each_time_and_a_carried_one_does_not() {
        let mut prober = Prober::default();
        let mut now = Instant::now();
        // Wanting 1.2 Mbit/s with an estimate of 400 kbit/s: a probe for 800 kbit/s.
        let request = prober.due(now, 400_000.0, 300_000.0, 1_200_000.0).unwrap();
        assert!(
            (request.padding_rate - 650_000.0).abs() < 1.0,
            "{request:?}"
        );
        assert!(request.packets >= MIN_PACKETS as u16);
        assert!(prober.due(now, 400_000.0, 300_000.0, 1_200_000.0).is_none());
        let mut waits = Vec::new();
        for _ in 0..5 {
            // Sent at 800 kbit/s, arriving at half the rate: the line carries 400 kbit/s.
            let outcome = probe(&mut prober, now, 4_000, 400_000.0);
            assert!(
                matches!(outcome, Outcome::Failed(Some(rate)) if rate < 800_000.0),
                "{outcome:?}"
            );
            let at = now + Duration::from_millis(100);
            let mut next = at;
            while prober
                .due(next, 400_000.0, 300_000.0, 1_200_000.0)
                .is_none()
            {
                next += Duration::from_millis(100);
            }
            waits.push((next - at).as_secs());
            now = next;
        }
        assert_eq!(waits, [2, 4, 4, 4, 4]);
        // The line widened: the probe arrives as it left.
        let outcome = probe(&mut prober, now, 2_000, 400_000.0);
        assert!(
            matches!(outcome, Outcome::Carried(rate) if (rate - 800_000.0).abs() < 1_000.0),
            "{outcome:?}"
        );
        // The next probe may follow a second later. When less is sent than the rate probed
        // for, what was sent counts, if it is more than the estimate.
        now += Duration::from_millis(100) + INTERVAL;
        prober.due(now, 600_000.0, 300_000.0, 2_000_000.0).unwrap();
        let outcome = probe(&mut prober, now, 2_000, 600_000.0);
        assert!(
            matches!(outcome, Outcome::Carried(rate) if (rate - 800_000.0).abs() < 1_000.0),
            "{outcome:?}"
        );
        // A probe for 1.6 Mbit/s that left at no more than the estimate (the node's pacer ran
        // late) did not try the line: it is no failure, and the next follows after the usual
        // interval rather than a backoff.
        now += Duration::from_millis(100) + INTERVAL;
        prober.due(now, 800_000.0, 300_000.0, 2_000_000.0).unwrap();
        let outcome = probe(&mut prober, now, 2_000, 800_000.0);
        assert!(
            matches!(outcome, Outcome::Short(rate) if (rate - 800_000.0).abs() < 1_000.0),
            "{outcome:?}"
        );
        now += Duration::from_millis(100);
        assert!(prober.due(now, 800_000.0, 300_000.0, 2_000_000.0).is_none());
        now += INTERVAL;
        prober.due(now, 800_000.0, 300_000.0, 2_000_000.0).unwrap();
        // The same window arriving at half its rate did try the line, and failed.
        let outcome = probe(&mut prober, now, 4_000, 800_000.0);
        assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
        let at = now + Duration::from_millis(100);
        assert!(
            prober
                .due(at + INTERVAL, 800_000.0, 300_000.0, 2_000_000.0)
                .is_none()
        );
    }

    #[test]
    fn a_carried_probe_the_line_does_not_bear_out_makes_the_next_wait_longer_each_time() {
        let mut prober = Prober::default();
        let mut now = Instant::now();
        // The time from a fall of the estimate to the next probe.
        let wait_after_fall = |prober: &mut Prober, now: &mut Instant, fall_after: Duration| {
            prober.due(*now, 400_000.0, 300_000.0, 1_200_000.0).unwrap();
            let outcome = probe(prober, *now, 2_000, 400_000.0);
            assert!(matches!(outcome, Outcome::Carried(_)), "{outcome:?}");
            let fell = *now + Duration::from_millis(100) + fall_after;
            prober.estimate_fell(fell);
            let mut next = fell;
            while prober
                .due(next, 400_000.0, 300_000.0, 1_200_000.0)
                .is_none()
            {
                next += Duration::from_millis(100);
            }
            // Give the request up, so that the next round asks anew.
            prober.on_reports(next, &[], Some(ProbeSent::Unavailable), 400_000.0);
            *now = next + INTERVAL;
            (next - fell).as_secs()
        };
        let waits: Vec<u64> = (0..5)
            .map(|_| wait_after_fall(&mut prober, &mut now, Duration::from_secs(1)))
            .collect();
        assert_eq!(
            waits,
            [4, 8, 16, 32, 32],
            "a fall 1 s after each carried probe"
        );
        // A carried probe whose rate held for 5 s was borne out: a later fall is the line's
        // own doing (the next probe may follow at once), and the next unborne probe waits the
        // first wait again.
        assert_eq!(wait_after_fall(&mut prober, &mut now, BORNE_OUT), 0);
        assert_eq!(
            wait_after_fall(&mut prober, &mut now, Duration::from_secs(1)),
            4
        );
    }

    #[test]
    fn a_request_nobody_takes_is_given_up() {
        let mut prober = Prober::default();
        let now = Instant::now();
        prober.due(now, 400_000.0, 300_000.0, 1_200_000.0).unwrap();
        assert_eq!(
            prober.on_reports(
                now + Duration::from_millis(10),
                &[],
                Some(ProbeSent::Unavailable),
                400_000.0,
            ),
            Some(Outcome::Unavailable)
        );
        prober
            .due(now + INTERVAL * 2, 400_000.0, 300_000.0, 1_200_000.0)
            .unwrap();
        assert_eq!(
            prober.on_reports(now + INTERVAL * 2 + ASK_TIMEOUT * 2, &[], None, 400_000.0),
            Some(Outcome::Unavailable)
        );
    }
}

//! The estimator on simulated paths, packet by packet on a virtual clock.

use super::*;
use crate::congestion::probe::padding_packet_bytes;
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

/// A path with a bottleneck of `capacity` bits per second and a drop-tail queue of
/// `queue` worth of time, simulated packet by packet on a virtual clock. With a `burst`, the
/// bottleneck is a token bucket shaper (as `tc`'s `tbf`, and many a home router's): a burst of
/// that many bytes passes at once when the bucket is full.
struct Path {
    capacity: f64,
    queue: Duration,
    burst: usize,
    /// When the bottleneck is free again, relative to the start.
    free_at: Duration,
    /// How many packets the queue dropped.
    dropped: usize,
    /// How many probes were sent over it.
    probes: usize,
    /// Until then the receiver is not listening yet: what is sent is lost (not by the queue).
    deaf_until: Duration,
}

impl Path {
    fn new(capacity: f64, queue: Duration) -> Self {
        Self {
            capacity,
            queue,
            burst: 0,
            free_at: Duration::ZERO,
            dropped: 0,
            probes: 0,
            deaf_until: Duration::ZERO,
        }
    }

    /// When a packet of `size` bytes sent at `sent` arrives, or `None` if dropped.
    fn carry(&mut self, sent: Duration, size: usize) -> Option<Duration> {
        if sent < self.deaf_until {
            return None;
        }
        // The bucket as a virtual clock: `free_at` is when the shaper would be through with
        // what it took, and a packet may go as early as the bucket's worth before that.
        let transmit = Duration::from_secs_f64(size as f64 * 8.0 / self.capacity);
        let bucket = Duration::from_secs_f64(self.burst as f64 * 8.0 / self.capacity);
        let start = self.free_at.saturating_sub(bucket).max(sent);
        if start - sent > self.queue {
            self.dropped += 1;
            return None;
        }
        self.free_at = self.free_at.max(start) + transmit;
        Some(start + transmit + Duration::from_millis(20))
    }
}

/// The feedback's word on packet `id` of `size` bytes that left at `departure` and arrived at
/// `arrival` (on the receiver's clock), or not at all.
fn report(id: u64, size: usize, departure: Instant, arrival: Option<Duration>) -> PacketReport {
    PacketReport {
        ssrc: 1,
        id,
        rtp_sequence_number: id as u16,
        is_twcc: true,
        twcc_sequence_number: id as u16,
        size,
        arrived: arrival.is_some(),
        departure,
        arrival,
        ecn: Ecn::default(),
    }
}

/// Sends at the estimate (as the node would, choosing layers that fit) for `duration`, with
/// feedback every 100 ms; returns the estimate every 100 ms.
fn run(
    estimator: &mut DownlinkEstimator,
    path: &mut Path,
    epoch: Instant,
    from: Duration,
    duration: Duration,
    sending: impl Fn(f64) -> f64,
) -> Vec<(Duration, f64)> {
    let mut trace = Vec::new();
    let mut media_at = from;
    let mut id = (from.as_micros() / 100) as u64;
    let mut batch = Vec::new();
    let mut next_feedback = from + Duration::from_millis(100);
    // Probe padding being sent, as the node and its pacer would: when the next leaves,
    // how many are left, the gap between them, and when the first left.
    let mut probe: Option<(Duration, u16, Duration, Duration)> = None;
    let mut padding_size = 0;
    while media_at < from + duration {
        if probe.is_none()
            && let Some(request) = estimator.cell.take_probe_request()
        {
            let wire = padding_packet_bytes(request.fill);
            padding_size = wire - 38;
            let gap = Duration::from_secs_f64(wire as f64 * 8.0 / request.padding_rate);
            probe = Some((media_at, request.packets, gap, media_at));
            path.probes += 1;
        }
        let (at, size) = match probe {
            Some((padding_at, ..)) if padding_at <= media_at => (padding_at, padding_size),
            _ => (media_at, 1000),
        };
        let arrival = path.carry(at, size);
        id += 1;
        batch.push(report(id, size, epoch + at, arrival));
        match probe {
            Some((padding_at, left, gap, first)) if padding_at == at => {
                probe = if left > 1 {
                    Some((at + gap, left - 1, gap, first))
                } else {
                    estimator.cell.probe_sent(epoch + first, epoch + at);
                    None
                };
            }
            _ => {
                let rate = sending(estimator.target_bitrate());
                media_at += Duration::from_secs_f64(size as f64 * 8.0 / rate);
            }
        }
        if at >= next_feedback {
            estimator.on_reports(epoch + next_feedback, &batch);
            batch.clear();
            trace.push((next_feedback, estimator.target_bitrate()));
            next_feedback += Duration::from_millis(100);
        }
    }
    trace
}

/// When a connection's first seconds are over (while they last the estimate may grow without
/// probes).
const SETTLED: Duration = STARTUP.saturating_add(Duration::from_secs(1));

/// A connection over `path` whose node has sent what the estimate allows until [`SETTLED`]:
/// the start of its clock, its cell, its estimator, and the estimate every 100 ms so far.
fn settled_on(
    path: &mut Path,
) -> (
    Instant,
    EstimateCell,
    DownlinkEstimator,
    Vec<(Duration, f64)>,
) {
    let epoch = Instant::now();
    let cell = EstimateCell::new();
    let mut estimator = DownlinkEstimator::new(cell.clone());
    let start = run(&mut estimator, path, epoch, Duration::ZERO, SETTLED, |e| e);
    (epoch, cell, estimator, start)
}

#[test]
fn a_thin_line_is_probed_for_more_now_and_then_and_never_flooded() {
    let mut path = Path::new(300_000.0, Duration::from_millis(100));
    // The node starts sending what the estimate allows, and the estimate falls.
    let (epoch, cell, mut estimator, start) = settled_on(&mut path);
    let dropped_at_start = path.dropped;
    // Then it sends the lowest layers, 200 kbit/s, and would move a video up if the
    // estimate reached 700 kbit/s.
    cell.set_wanted(Some(700_000));
    let trace = run(
        &mut estimator,
        &mut path,
        epoch,
        SETTLED,
        Duration::from_secs(30),
        |_| 200_000.0,
    );
    assert!(
        trace.iter().all(|(_, e)| *e < 700_000.0),
        "the line never looks wide enough for the move up: {trace:?}"
    );
    let before = start.iter().map(|(_, e)| *e).fold(0.0, f64::max);
    let settled: Vec<f64> = trace.iter().map(|(_, e)| *e).collect();
    assert!(
        settled
            .iter()
            .all(|e| *e <= before.max(210_000.0 * RECEIVED_FACTOR + HEADROOM)),
        "nor does it grow far above what arrives: {settled:?}"
    );
    assert!(
        path.dropped <= dropped_at_start + 3,
        "the probes hardly ever overflow the line's queue: {} packets dropped",
        path.dropped - dropped_at_start
    );
    // Tried after 2 s, then every 4 s.
    assert!(
        (6..=9).contains(&path.probes),
        "{} probes in 30 s",
        path.probes
    );
    // The metrics count the loss the feedback reported: what the line dropped, but for
    // the last moment's, not reported yet.
    let (reported, lost) = cell.reported_and_lost();
    let dropped = path.dropped as u64;
    assert!(reported > 1_000, "{reported} packets reported on");
    assert!(
        lost <= dropped && lost + 5 >= dropped,
        "{lost} reported lost of {dropped} dropped"
    );
}

#[test]
fn a_shaper_that_lets_probes_through_does_not_get_the_move_up_again_and_again() {
    // A 300 kbit/s line behind a token bucket of 8 KB (as the browser tests' weak line): a
    // probe of 40 ms passes at full speed whatever it asks for, and the node moves a video up
    // to 700 kbit/s, which the line cannot carry.
    let mut path = Path::new(300_000.0, Duration::from_millis(100));
    path.burst = 8 * 1024;
    let (epoch, cell, mut estimator, _) = settled_on(&mut path);
    let settled = SETTLED;
    cell.set_wanted(Some(700_000));
    let dropped_before = path.dropped;
    let trace = run(
        &mut estimator,
        &mut path,
        epoch,
        settled,
        Duration::from_secs(60),
        |e| if e >= 700_000.0 { 700_000.0 } else { 200_000.0 },
    );
    let moves: Vec<Duration> = trace
        .windows(2)
        .filter(|pair| pair[0].1 < 700_000.0 && pair[1].1 >= 700_000.0)
        .map(|pair| pair[1].0 - settled)
        .collect();
    let late = moves
        .iter()
        .filter(|at| **at >= Duration::from_secs(20))
        .count();
    assert!(
        late <= 2,
        "after the first tries, the move up is tried again only now and then: at {moves:?}, \
         {} packets dropped",
        path.dropped - dropped_before
    );
}

#[test]
fn a_line_that_carries_nothing_yet_is_probed_on_the_tick() {
    // A subscriber whose only stream is a 3 Mbit/s video that never played: the node
    // sends it nothing, so no feedback comes; only the probes' padding is reported on.
    let epoch = Instant::now();
    let cell = EstimateCell::new();
    let mut estimator = DownlinkEstimator::new(cell.clone());
    let mut path = Path::new(50_000_000.0, Duration::from_millis(100));
    let (mut id, mut reached) = (0_u64, None);
    let tick = Duration::from_millis(100);
    let mut at = Duration::ZERO;
    while at < Duration::from_secs(4) {
        estimator.handle_timeout(epoch + at);
        assert_eq!(
            cell.take_probe_request(),
            None,
            "nothing wanted, nothing probed"
        );
        at += tick;
    }
    cell.set_wanted(Some(3_000_000));
    while at < Duration::from_secs(20) && reached.is_none() {
        estimator.handle_timeout(epoch + at);
        if let Some(request) = cell.take_probe_request() {
            path.probes += 1;
            let wire = padding_packet_bytes(request.fill);
            let padding_size = wire - 38;
            let gap = Duration::from_secs_f64(wire as f64 * 8.0 / request.padding_rate);
            let reports: Vec<PacketReport> = (0..u32::from(request.packets))
                .map(|index| {
                    let sent = at + gap * index;
                    let arrival = path.carry(sent, padding_size);
                    id += 1;
                    report(id, padding_size, epoch + sent, arrival)
                })
                .collect();
            let last = reports.last().map(|report| report.departure);
            cell.probe_sent(epoch + at, last.unwrap_or(epoch + at));
            // The feedback on the padding comes 100 ms later.
            at += tick;
            estimator.on_reports(epoch + at, &reports);
        }
        if estimator.target_bitrate() >= 3_000_000.0 {
            reached = Some(at);
        }
        at += tick;
    }
    assert!(
        reached.is_some_and(|at| at <= Duration::from_secs(8)),
        "the estimate reaches what the video needs within 4 s of being wanted: {reached:?}, \
         {} probes",
        path.probes
    );
    assert_eq!(path.dropped, 0);
}

#[test]
fn an_open_line_is_probed_up_to_what_the_node_wants() {
    let epoch = Instant::now();
    let cell = EstimateCell::new();
    let mut estimator = DownlinkEstimator::new(cell.clone());
    let mut path = Path::new(20_000_000.0, Duration::from_millis(100));
    // 500 kbit/s arrive; past the connection's first seconds, the next layer up needs 2.5
    // Mbit/s: two probes, 1 s apart.
    let settled = STARTUP + Duration::from_secs(1);
    run(
        &mut estimator,
        &mut path,
        epoch,
        Duration::ZERO,
        settled,
        |_| 500_000.0,
    );
    cell.set_wanted(Some(2_500_000));
    let trace = run(
        &mut estimator,
        &mut path,
        epoch,
        settled,
        Duration::from_secs(4),
        |_| 500_000.0,
    );
    let reached = trace.iter().find(|(_, e)| *e >= 2_500_000.0);
    assert!(
        reached.is_some_and(|(at, _)| *at <= settled + Duration::from_secs(3)),
        "{trace:?}"
    );
    assert_eq!(path.dropped, 0);
    assert_eq!(path.probes, 2, "500 kbit/s to 1 Mbit/s, then to 2.5");
}

#[test]
fn the_estimate_falls_to_a_narrow_path_and_recovers_when_it_widens() {
    let epoch = Instant::now();
    let cell = EstimateCell::new();
    let mut estimator = DownlinkEstimator::new(cell.clone());
    let mut path = Path::new(300_000.0, Duration::from_millis(200));
    // The node sends what the estimate allows.
    let narrow = run(
        &mut estimator,
        &mut path,
        epoch,
        Duration::ZERO,
        Duration::from_secs(8),
        |e| e,
    );
    let fell = narrow.iter().find(|(_, estimate)| *estimate < 400_000.0);
    assert!(
        fell.is_some_and(|(at, _)| *at <= Duration::from_secs(2)),
        "the estimate falls towards 300 kbit/s within 2 s: {narrow:?}"
    );
    let settled: Vec<f64> = narrow
        .iter()
        .filter(|(at, _)| *at > Duration::from_secs(4))
        .map(|(_, e)| *e)
        .collect();
    let mean = settled.iter().sum::<f64>() / settled.len() as f64;
    assert!(
        (150_000.0..550_000.0).contains(&mean),
        "it hovers around the capacity: {mean}"
    );
    assert_eq!(
        cell.get(),
        estimator.target_bitrate() as u64,
        "the cell follows"
    );
    // The path widens to 5 Mbit/s.
    path.capacity = 5_000_000.0;
    let wide = run(
        &mut estimator,
        &mut path,
        epoch,
        Duration::from_secs(8),
        Duration::from_secs(6),
        |e| e,
    );
    let rose = wide.iter().find(|(_, estimate)| *estimate > 1_000_000.0);
    assert!(
        rose.is_some_and(|(at, _)| *at <= Duration::from_secs(8 + 5)),
        "the estimate passes 1 Mbit/s within 5 s: {wide:?}"
    );
}

#[test]
fn a_paused_subscriber_earns_its_way_back_a_layer_at_a_time() {
    let epoch = Instant::now();
    let cell = EstimateCell::new();
    let mut estimator = DownlinkEstimator::new(cell.clone());
    let mut path = Path::new(150_000.0, Duration::from_millis(200));
    // A line too thin for video: the estimate falls, and the node pauses the videos.
    let thin = run(
        &mut estimator,
        &mut path,
        epoch,
        Duration::ZERO,
        Duration::from_secs(4),
        |e| e,
    );
    assert!(
        thin.iter().any(|(_, e)| *e < 250_000.0),
        "it fell: {thin:?}"
    );
    // The line clears, and only one voice arrives while the videos are paused; the node
    // would resume one at 175 kbit/s (with headroom) beside it.
    cell.set_wanted(Some(280_000));
    path.capacity = 50_000_000.0;
    let paused = run(
        &mut estimator,
        &mut path,
        epoch,
        Duration::from_secs(4),
        Duration::from_secs(6),
        |_| 40_000.0,
    );
    let resumable = paused.iter().find(|(_, e)| *e >= 280_000.0);
    assert!(
        resumable.is_some_and(|(at, _)| *at <= Duration::from_secs(4 + 4)),
        "enough to resume a 175 kbit/s layer beside the voice within 4 s: {paused:?}"
    );
    let top = paused.iter().map(|(_, e)| *e).fold(0.0, f64::max);
    assert!(
        top < 1_000_000.0,
        "but no jump to a high layer on the strength of audio alone: {top}"
    );
    // Each move up shows the path carries more, and the estimate follows.
    let rising = run(
        &mut estimator,
        &mut path,
        epoch,
        Duration::from_secs(10),
        Duration::from_secs(8),
        |e| e,
    );
    let high = rising.iter().find(|(_, e)| *e >= 1_900_000.0);
    assert!(
        high.is_some_and(|(at, _)| *at <= Duration::from_secs(10 + 7)),
        "enough for a 1.5 Mbit/s layer within 7 s: {rising:?}"
    );
}

#[test]
fn a_quiet_path_grows_the_estimate_only_so_far_above_what_arrives() {
    let epoch = Instant::now();
    let mut estimator = DownlinkEstimator::new(EstimateCell::new());
    let mut path = Path::new(50_000_000.0, Duration::from_millis(200));
    // Only 2 Mbit/s are sent, whatever the estimate.
    let trace = run(
        &mut estimator,
        &mut path,
        epoch,
        Duration::ZERO,
        Duration::from_secs(20),
        |_| 2_000_000.0,
    );
    let last = trace.last().unwrap().1;
    // What arrived, measured over a short window, may read a little high.
    assert!(
        last <= 2_500_000.0 * RECEIVED_FACTOR + HEADROOM,
        "the estimate stays near what was sent, not what the path could carry: {last}"
    );
}

/// A new connection on a path of `capacity` bits per second, sending what the estimate allows
/// for `duration` while the node wants `wanted`: the estimator, the path and the estimate every
/// 100 ms.
fn new_line(
    capacity: f64,
    wanted: u64,
    duration: Duration,
) -> (DownlinkEstimator, Path, Vec<(Duration, f64)>) {
    let cell = EstimateCell::new();
    cell.set_wanted(Some(wanted));
    let mut estimator = DownlinkEstimator::new(cell);
    let mut path = Path::new(capacity, Duration::from_millis(100));
    let trace = run(
        &mut estimator,
        &mut path,
        Instant::now(),
        Duration::ZERO,
        duration,
        |e| e,
    );
    (estimator, path, trace)
}

#[test]
fn a_new_line_grows_fast_until_it_first_fills() {
    // Open: the node wants 4 Mbit/s (a joiner's fifteen videos). At the usual 40 % a second
    // this took four seconds and more.
    let (_, path, open) = new_line(20_000_000.0, 4_000_000, Duration::from_secs(4));
    let reached = open.iter().find(|(_, e)| *e >= 4_000_000.0);
    assert!(
        reached.is_some_and(|(at, _)| *at <= Duration::from_millis(2_500)),
        "4 Mbit/s within 2.5 s: {open:?}"
    );
    assert_eq!(path.dropped, 0);
    // A line of 1.5 Mbit/s: the first queue ends the fast growth, and the estimate is near
    // the line a second later.
    let (estimator, _, thin) = new_line(1_500_000.0, 4_000_000, Duration::from_secs(4));
    assert!(
        estimator.last_decrease.is_some(),
        "the queue ended the fast growth"
    );
    let fell = thin
        .windows(2)
        .find(|pair| pair[1].1 < pair[0].1)
        .map(|pair| pair[1].0)
        .expect("the estimate fell");
    assert!(fell <= Duration::from_secs(2), "{thin:?}");
    let later = thin
        .iter()
        .find(|(at, _)| *at >= fell + Duration::from_secs(1))
        .map(|(_, e)| *e);
    assert!(
        later.is_some_and(|e| e <= 1_650_000.0),
        "near the line: {thin:?}"
    );
}

#[test]
fn loss_before_the_receiver_listens_does_not_end_the_fast_start() {
    // The first feedback reports the packets of a connection's first 30 ms lost (its receiver
    // was still setting up), and nothing that arrived: no word on the line's rate.
    let cell = EstimateCell::new();
    cell.set_wanted(Some(4_000_000));
    let mut estimator = DownlinkEstimator::new(cell);
    let mut path = Path::new(20_000_000.0, Duration::from_millis(100));
    path.deaf_until = Duration::from_millis(30);
    let trace = run(
        &mut estimator,
        &mut path,
        Instant::now(),
        Duration::ZERO,
        Duration::from_secs(4),
        |e| e,
    );
    let reached = trace.iter().find(|(_, e)| *e >= 4_000_000.0);
    assert!(
        reached.is_some_and(|(at, _)| *at <= Duration::from_millis(2_500)),
        "4 Mbit/s within 2.5 s, as on a line that lost nothing: {trace:?}"
    );
}

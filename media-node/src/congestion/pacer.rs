//! Paces the video the node sends one subscriber, and lets its audio pass first.
//!
//! A keyframe is several times the size of the frames between, and the node forwards it the
//! moment it arrives: on a thin line that burst fills the bottleneck's queue at once, and the
//! audio packets behind it are dropped or delayed, which people hear. So video leaves at no more
//! than what the subscriber's downlink estimate leaves beside its audio, queued here for the
//! moment a keyframe takes, while audio and RTCP never wait.
//!
//! It sits between the NACK responder and the transport-wide sequence numbering in the
//! interceptor chain, so retransmissions are paced too and every packet is numbered when it
//! actually leaves. A retransmission that has waited long is dropped rather than sent: on a
//! congested line the requests for lost packets multiply, and answering all of them late only
//! deepens the congestion (the receiver asks again, or for a keyframe).
//!
//! Padding-only packets on a video stream are a probe of the line (see [`super::probe`]): they
//! leave at the probe's padding rate, in order with the video (a receiver drops a packet whose
//! sequence number is far behind the newest it has seen, as a replay), and when the last of them
//! has left the pacer tells the estimator when the probe was sent.
//!
//! Every packet it held leaves stamped with the instant it left: the send history below reads
//! that as its departure, and a departure stamped when the packet was queued here would charge
//! this queue to the network (a paced keyframe would look like a queue growing on the line).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error as RtcError;
use rtc::shared::marshal::MarshalSize;
use rustc_hash::FxHashSet;

use super::estimate::EstimateCell;
use super::probe::{PADDING_EXTENSION_ID, PADDING_FILL, padding_packet_bytes};

/// Video leaves at up to this multiple of what the estimate leaves beside the audio: the
/// allocation keeps the average below it, so only bursts wait.
const PACE_FACTOR: f64 = 1.0;
/// Weight of the newest second in the audio rate's average.
const AUDIO_WEIGHT: f64 = 0.5;
/// The slowest pace, so that a collapsed estimate cannot stall video entirely.
const MIN_PACE: f64 = 100_000.0;
/// How much may leave at once, as time at the pace.
const BURST: Duration = Duration::from_millis(20);
/// Video held longer than this leaves at [`OVERDUE_BOOST`] times the pace until it has caught
/// up: late video is worse than a moderate overshoot. (It used to leave at once, and a keyframe
/// of a video paused again right after it resumed reached a thin line as one burst of 9 KB,
/// which held the audio behind it for a quarter of a second.)
const MAX_HOLD: Duration = Duration::from_millis(500);
const OVERDUE_BOOST: f64 = 2.0;
/// A retransmission held longer than this is dropped.
const MAX_RETRANSMISSION_HOLD: Duration = Duration::from_millis(150);
/// The most video packets held.
const MAX_QUEUE: usize = 1000;
/// How much probe padding may leave at once, as time at the probe's rate: a few packets, so
/// that a timer that fires a millisecond late does not slow the probe down.
const PADDING_BURST: Duration = Duration::from_millis(5);

/// The pacer of one connection.
pub struct AudioFirstPacer {
    estimate: EstimateCell,
    /// Local SSRCs that carry video.
    video: FxHashSet<u32>,
    /// Ready to leave: audio, RTCP, and video whose turn came.
    ready: VecDeque<TaggedPacket>,
    /// Video waiting for its turn.
    held: VecDeque<TaggedPacket>,
    /// How much of `held` is probe padding, the bits each of its packets takes on the wire (one
    /// probe's packets are all of one size), its bits that may leave now, and when the first of
    /// it left.
    padding_held: usize,
    padding_packet_bits: f64,
    padding_tokens: f64,
    padding_refilled: Option<Instant>,
    probe_started: Option<Instant>,
    /// Inbound packets, passed on untouched.
    reads: VecDeque<TaggedPacket>,
    /// Bits that may leave now.
    tokens: f64,
    refilled: Option<Instant>,
    /// Audio bits sent since `audio_since`, and the average audio rate.
    audio_bits: f64,
    audio_since: Option<Instant>,
    audio_rate: f64,
}

impl AudioFirstPacer {
    /// A pacer reading the subscriber's estimate from `estimate`.
    pub fn new(estimate: EstimateCell) -> Self {
        Self {
            estimate,
            video: FxHashSet::default(),
            ready: VecDeque::new(),
            held: VecDeque::new(),
            padding_held: 0,
            padding_packet_bits: 0.0,
            padding_tokens: 0.0,
            padding_refilled: None,
            probe_started: None,
            reads: VecDeque::new(),
            tokens: 0.0,
            refilled: None,
            audio_bits: 0.0,
            audio_since: None,
            audio_rate: 0.0,
        }
    }

    fn pace(&self) -> f64 {
        ((self.estimate.get() as f64 - self.audio_rate) * PACE_FACTOR).max(MIN_PACE)
    }

    /// Counts an audio packet towards the audio rate.
    fn count_audio(&mut self, now: Instant, bits: f64) {
        let since = *self.audio_since.get_or_insert(now);
        self.audio_bits += bits;
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= Duration::from_secs(1) {
            let sample = self.audio_bits / elapsed.as_secs_f64();
            self.audio_rate += AUDIO_WEIGHT * (sample - self.audio_rate);
            self.audio_bits = 0.0;
            self.audio_since = Some(now);
        }
    }

    /// The pace now: faster while the oldest held video is overdue.
    fn current_pace(&self, now: Instant) -> f64 {
        let overdue = self
            .held
            .front()
            .is_some_and(|front| now.saturating_duration_since(front.now) >= MAX_HOLD);
        if overdue {
            self.pace() * OVERDUE_BOOST
        } else {
            self.pace()
        }
    }

    fn refill(&mut self, now: Instant) {
        let pace = self.current_pace(now);
        // At least the next packet: below 480 kbit/s, 20 ms at the pace is less than a full
        // one, and a bucket that could never hold it would send nothing until it was overdue,
        // and then all of it at once.
        let next = self.held.front().map_or(0.0, packet_bits);
        let burst = (pace * BURST.as_secs_f64()).max(next);
        let elapsed = self
            .refilled
            .map_or(BURST, |at| now.saturating_duration_since(at));
        self.tokens = (self.tokens + pace * elapsed.as_secs_f64()).min(burst);
        self.refilled = Some(now);
    }

    /// Moves held video whose turn came (or that waited too long) to the ready queue, and probe
    /// padding in its turn at the probe's rate.
    fn release(&mut self, now: Instant) {
        self.refill(now);
        self.refill_padding(now);
        while let Some(front) = self.held.front() {
            if is_padding(front) {
                if self.padding_tokens < self.padding_packet_bits {
                    break;
                }
                self.padding_tokens -= self.padding_packet_bits;
                self.padding_held -= 1;
                self.probe_started.get_or_insert(now);
            } else {
                let waited = now.saturating_duration_since(front.now);
                if waited >= MAX_RETRANSMISSION_HOLD
                    && front.message.has(&Attribute::Retransmission)
                {
                    self.held.pop_front();
                    continue;
                }
                let bits = packet_bits(front);
                if self.tokens < bits {
                    break;
                }
                self.tokens -= bits;
            }
            if let Some(mut packet) = self.held.pop_front() {
                packet.now = now;
                self.ready.push_back(packet);
            }
        }
        if self.padding_held == 0
            && let Some(first) = self.probe_started.take()
        {
            self.padding_refilled = None;
            self.padding_tokens = 0.0;
            self.estimate.probe_sent(first, now);
        }
        self.estimate.set_queued(self.held.len());
    }

    fn refill_padding(&mut self, now: Instant) {
        if self.padding_held == 0 {
            return;
        }
        let bits = self.padding_packet_bits;
        let rate = self.padding_rate();
        let cap = (rate * PADDING_BURST.as_secs_f64()).max(bits);
        self.padding_tokens = match self.padding_refilled {
            // The first packet of a probe may leave at once.
            None => bits,
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_secs_f64();
                (self.padding_tokens + rate * elapsed).min(cap)
            }
        };
        self.padding_refilled = Some(now);
    }

    fn padding_rate(&self) -> f64 {
        self.estimate.padding_rate().max(MIN_PACE)
    }
}

/// Whether a packet is probe padding: RTP without payload, only padding (and not a
/// retransmission of such a packet, which is paced as video).
fn is_padding(packet: &TaggedPacket) -> bool {
    matches!(&packet.message.packet, Packet::Rtp(rtp) if rtp.header.padding && rtp.payload.is_empty())
        && !packet.message.has(&Attribute::Retransmission)
}

/// What a probe's padding packet takes on the wire, in bits: small, or large with the filler.
fn padding_bits(packet: &TaggedPacket) -> f64 {
    let large = matches!(&packet.message.packet, Packet::Rtp(rtp)
        if rtp.header.extensions.iter().any(|e| e.id == PADDING_EXTENSION_ID));
    (padding_packet_bytes(if large { PADDING_FILL } else { 0 }) * 8) as f64
}

fn packet_bits(packet: &TaggedPacket) -> f64 {
    match &packet.message.packet {
        Packet::Rtp(rtp) => rtp.marshal_size() as f64 * 8.0,
        _ => 0.0,
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for AudioFirstPacer {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = RtcError;
    type Time = Instant;

    fn handle_read(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        self.reads.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        let is_video = matches!(&message.message.packet, Packet::Rtp(rtp) if self.video.contains(&rtp.header.ssrc));
        if !is_video {
            if matches!(&message.message.packet, Packet::Rtp(_)) {
                self.count_audio(message.now, packet_bits(&message));
            }
            self.ready.push_back(message);
            return Ok(());
        }
        let now = message.now;
        if is_padding(&message) {
            // A probe's padding is written all at once; it starts leaving at the next timeout,
            // when all of it is here.
            self.padding_held += 1;
            self.padding_packet_bits = padding_bits(&message);
            self.held.push_back(message);
            return Ok(());
        }
        if self.held.len() >= MAX_QUEUE
            && let Some(mut oldest) = self.held.pop_front()
        {
            if is_padding(&oldest) {
                self.padding_held -= 1;
            }
            oldest.now = now;
            self.ready.push_back(oldest);
        }
        self.held.push_back(message);
        self.release(now);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.ready.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.release(now);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        let front = self.held.front()?;
        if is_padding(front) {
            let Some(refilled) = self.padding_refilled else {
                return Some(front.now + Duration::from_millis(1));
            };
            let missing = (self.padding_packet_bits - self.padding_tokens).max(0.0);
            let wait = Duration::from_secs_f64(missing / self.padding_rate());
            return Some(refilled + wait.max(Duration::from_millis(1)));
        }
        let missing = (packet_bits(front) - self.tokens).max(0.0);
        let refilled = self.refilled.unwrap_or(front.now);
        let wait = Duration::from_secs_f64(missing / self.current_pace(refilled));
        let at = refilled + wait.max(Duration::from_millis(1));
        // The pace quickens when the oldest becomes overdue.
        if at > front.now + MAX_HOLD && refilled < front.now + MAX_HOLD {
            Some(front.now + MAX_HOLD)
        } else {
            Some(at)
        }
    }
}

impl Interceptor for AudioFirstPacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("video/") {
            // Its repairs, if they go on a stream of their own, are video as well.
            self.video
                .extend(std::iter::once(info.ssrc).chain(info.ssrc_rtx));
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.video.remove(&info.ssrc);
        if let Some(rtx) = info.ssrc_rtx {
            self.video.remove(&rtx);
        }
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::{TransportContext, TransportMessage};

    fn rtp(now: Instant, ssrc: u32, payload: usize) -> TaggedPacket {
        TransportMessage {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket {
                attributes: Vec::new(),
                packet: Packet::Rtp(rtc::rtp::Packet {
                    header: rtc::rtp::Header {
                        version: 2,
                        ssrc,
                        ..Default::default()
                    },
                    payload: vec![0u8; payload].into(),
                }),
            },
        }
    }

    fn pacer(estimate_bps: u64) -> AudioFirstPacer {
        let cell = EstimateCell::new();
        cell.set(estimate_bps as f64);
        let mut pacer = AudioFirstPacer::new(cell);
        for (ssrc, mime) in [(1, "audio/opus"), (2, "video/VP8")] {
            pacer.bind_local_stream(&StreamInfo {
                ssrc,
                mime_type: mime.into(),
                ..Default::default()
            });
        }
        pacer
    }

    /// Runs the pacer's timers from `start` until it holds nothing: every packet in the order
    /// it left (each stamped with when it left), and when the pacer fell idle.
    fn run_until_idle(pacer: &mut AudioFirstPacer, start: Instant) -> (Vec<TaggedPacket>, Instant) {
        let mut sent = Vec::new();
        let mut now = start;
        loop {
            sent.extend(std::iter::from_fn(|| pacer.poll_write()));
            let Some(at) = pacer.poll_timeout() else {
                return (sent, now);
            };
            now = at.max(now + Duration::from_millis(1));
            pacer.handle_timeout(now).unwrap();
        }
    }

    fn ssrc(packet: &TaggedPacket) -> Option<u32> {
        match &packet.message.packet {
            Packet::Rtp(rtp) => Some(rtp.header.ssrc),
            _ => None,
        }
    }

    #[test]
    fn a_keyframe_is_spread_and_audio_overtakes_it() {
        let start = Instant::now();
        // 300 kbit/s estimate and no audio yet: video leaves at 300 kbit/s.
        let mut pacer = pacer(300_000);
        // A keyframe of 30 packets of 1200 bytes arrives at once, then an audio packet.
        for _ in 0..30 {
            pacer.handle_write(rtp(start, 2, 1200)).unwrap();
        }
        pacer.handle_write(rtp(start, 1, 100)).unwrap();
        let queued = pacer.estimate.queued();
        assert!((25..=30).contains(&queued), "{queued} packets wait");
        let (packets, _) = run_until_idle(&mut pacer, start);
        assert_eq!(
            pacer.estimate.queued(),
            0,
            "the metrics see the queue empty"
        );
        let audio_at = packets.iter().find(|p| ssrc(p) == Some(1)).map(|p| p.now);
        let sent: Vec<Instant> = packets
            .iter()
            .filter(|p| ssrc(p) == Some(2))
            .map(|p| p.now)
            .collect();
        assert_eq!(
            audio_at,
            Some(start),
            "audio does not wait behind the keyframe"
        );
        assert_eq!(sent.len(), 30, "all of the keyframe leaves");
        let spread = *sent.last().unwrap() - start;
        // 30 × 1212 bytes at 300 kbit/s is about 0.97 s; more than MAX_HOLD, so after 0.5 s the
        // rest leaves at twice the pace: about 0.73 s in all. (Before a full packet fitted in
        // the pacer's bucket at this pace, nothing left before 0.5 s, and then all at once.)
        assert!(
            (Duration::from_millis(650)..=Duration::from_millis(800)).contains(&spread),
            "spread over {spread:?}"
        );
        let in_first_100ms = sent
            .iter()
            .filter(|at| **at < start + Duration::from_millis(100))
            .count();
        assert!(
            in_first_100ms <= 5,
            "never a burst: {in_first_100ms} packets in the first 100 ms"
        );
    }

    #[test]
    fn late_retransmissions_are_dropped_rather_than_sent() {
        let start = Instant::now();
        let mut pacer = pacer(200_000);
        for _ in 0..40 {
            let mut packet = rtp(start, 2, 1200);
            packet.message.add(Attribute::Retransmission);
            pacer.handle_write(packet).unwrap();
        }
        let (packets, idle_at) = run_until_idle(&mut pacer, start);
        let sent = packets.len();
        // 200 kbit/s for 150 ms is about three packets, plus the first burst.
        assert!(sent < 10, "{sent} of 40 retransmissions sent");
        assert!(
            idle_at - start < MAX_HOLD,
            "nothing waits after they were dropped"
        );
    }

    fn padding(now: Instant, ssrc: u32) -> TaggedPacket {
        let mut packet = rtp(now, ssrc, 0);
        if let Packet::Rtp(rtp) = &mut packet.message.packet {
            rtp.header.padding = true;
        }
        packet
    }

    #[test]
    fn held_video_leaves_stamped_with_when_it_left() {
        let start = Instant::now();
        let mut pacer = pacer(300_000);
        for _ in 0..10 {
            pacer.handle_write(rtp(start, 2, 1200)).unwrap();
        }
        let (packets, _) = run_until_idle(&mut pacer, start);
        let stamps: Vec<Instant> = packets.iter().map(|p| p.now).collect();
        assert_eq!(stamps.len(), 10);
        assert!(
            *stamps.last().unwrap() >= start + Duration::from_millis(250),
            "the last of 10 x 1200 bytes at 300 kbit/s leaves about 300 ms later, and says so: {stamps:?}"
        );
    }

    #[test]
    fn probe_padding_leaves_at_its_own_rate_in_order_with_the_video() {
        let start = Instant::now();
        let mut pacer = pacer(300_000);
        // 500 kbit/s of padding: 40 packets of 62 bytes take about 40 ms.
        pacer
            .estimate
            .request_probe(crate::congestion::probe::ProbeRequest {
                padding_rate: 500_000.0,
                packets: 40,
                fill: 0,
            });
        for _ in 0..40 {
            pacer.handle_write(padding(start, 2)).unwrap();
        }
        pacer.handle_write(rtp(start, 2, 500)).unwrap();
        pacer.handle_write(rtp(start, 1, 100)).unwrap();
        let (packets, _) = run_until_idle(&mut pacer, start);
        let (mut padding_at, mut video_at, mut audio_at) = (Vec::new(), Vec::new(), Vec::new());
        for packet in &packets {
            match ssrc(packet) {
                _ if is_padding(packet) => padding_at.push(packet.now),
                Some(1) => audio_at.push(packet.now),
                _ => video_at.push(packet.now),
            }
        }
        assert_eq!(padding_at.len(), 40);
        assert_eq!(audio_at, [start], "audio does not wait behind the padding");
        assert_eq!(
            video_at,
            [*padding_at.last().unwrap()],
            "video written after the padding leaves after it"
        );
        let spread = *padding_at.last().unwrap() - padding_at[0];
        assert!(
            (Duration::from_millis(30)..=Duration::from_millis(50)).contains(&spread),
            "{spread:?}"
        );
        assert_eq!(
            pacer.estimate.take_probe_outcome(),
            Some(crate::congestion::probe::ProbeSent::Window(
                padding_at[0],
                *padding_at.last().unwrap()
            )),
            "the estimator learns when the probe went out"
        );
    }

    #[test]
    fn on_a_wide_line_video_is_not_held() {
        let start = Instant::now();
        let mut pacer = pacer(20_000_000);
        for _ in 0..5 {
            pacer.handle_write(rtp(start, 2, 1200)).unwrap();
        }
        assert_eq!(std::iter::from_fn(|| pacer.poll_write()).count(), 5);
    }
}

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

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error as RtcError;
use rtc::shared::marshal::MarshalSize;

use super::downlink::EstimateCell;

/// Video leaves at up to this multiple of what the estimate leaves beside the audio: the
/// allocation keeps the average below it, so only bursts wait.
const PACE_FACTOR: f64 = 1.0;
/// Weight of the newest second in the audio rate's average.
const AUDIO_WEIGHT: f64 = 0.5;
/// The slowest pace, so that a collapsed estimate cannot stall video entirely.
const MIN_PACE: f64 = 100_000.0;
/// How much may leave at once, as time at the pace.
const BURST: Duration = Duration::from_millis(20);
/// Video held longer than this is sent anyway: late video is worse than a brief overshoot.
const MAX_HOLD: Duration = Duration::from_millis(500);
/// A retransmission held longer than this is dropped.
const MAX_RETRANSMISSION_HOLD: Duration = Duration::from_millis(150);
/// The most video packets held.
const MAX_QUEUE: usize = 1000;

/// The pacer of one connection.
pub struct AudioFirstPacer {
    estimate: EstimateCell,
    /// Local SSRCs that carry video.
    video: HashSet<u32>,
    /// Ready to leave: audio, RTCP, and video whose turn came.
    ready: VecDeque<TaggedPacket>,
    /// Video waiting for its turn.
    held: VecDeque<TaggedPacket>,
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
            video: HashSet::new(),
            ready: VecDeque::new(),
            held: VecDeque::new(),
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

    fn refill(&mut self, now: Instant) {
        let pace = self.pace();
        let burst = pace * BURST.as_secs_f64();
        let elapsed = self
            .refilled
            .map_or(BURST, |at| now.saturating_duration_since(at));
        self.tokens = (self.tokens + pace * elapsed.as_secs_f64()).min(burst);
        self.refilled = Some(now);
    }

    /// Moves held video whose turn came (or that waited too long) to the ready queue.
    fn release(&mut self, now: Instant) {
        self.refill(now);
        while let Some(front) = self.held.front() {
            let waited = now.saturating_duration_since(front.now);
            if waited >= MAX_RETRANSMISSION_HOLD && front.message.has(&Attribute::Retransmission) {
                self.held.pop_front();
                continue;
            }
            let bits = packet_bits(front);
            let overdue = waited >= MAX_HOLD;
            if self.tokens < bits && !overdue {
                break;
            }
            self.tokens -= bits;
            if let Some(packet) = self.held.pop_front() {
                self.ready.push_back(packet);
            }
        }
    }
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
        if self.held.len() >= MAX_QUEUE
            && let Some(oldest) = self.held.pop_front()
        {
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
        let missing = (packet_bits(front) - self.tokens).max(0.0);
        let wait = Duration::from_secs_f64(missing / self.pace());
        let at = self.refilled.unwrap_or(front.now) + wait.max(Duration::from_millis(1));
        Some(at.min(front.now + MAX_HOLD))
    }
}

impl Interceptor for AudioFirstPacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("video/") {
            self.video.insert(info.ssrc);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.video.remove(&info.ssrc);
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
        let mut sent = Vec::new();
        let mut now = start;
        let mut audio_at = None;
        while now < start + Duration::from_secs(2) {
            while let Some(packet) = pacer.poll_write() {
                if let Packet::Rtp(rtp) = &packet.message.packet {
                    if rtp.header.ssrc == 1 {
                        audio_at.get_or_insert(now);
                    } else {
                        sent.push(now);
                    }
                }
            }
            now = match pacer.poll_timeout() {
                Some(at) => at.max(now + Duration::from_millis(1)),
                None => break,
            };
            pacer.handle_timeout(now).unwrap();
        }
        assert_eq!(
            audio_at,
            Some(start),
            "audio does not wait behind the keyframe"
        );
        assert_eq!(sent.len(), 30, "all of the keyframe leaves");
        let spread = *sent.last().unwrap() - start;
        // 30 × 1212 bytes at 300 kbit/s is about 0.97 s; more than MAX_HOLD, so the tail goes
        // out when it has waited that long.
        assert!(
            spread >= Duration::from_millis(400),
            "spread over {spread:?}"
        );
        assert!(
            spread <= MAX_HOLD + Duration::from_millis(20),
            "but held no longer than {MAX_HOLD:?}: {spread:?}"
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
        let mut sent = 0;
        let mut now = start;
        while let Some(at) = pacer.poll_timeout() {
            sent += std::iter::from_fn(|| pacer.poll_write()).count();
            now = at.max(now + Duration::from_millis(1));
            pacer.handle_timeout(now).unwrap();
        }
        sent += std::iter::from_fn(|| pacer.poll_write()).count();
        // 200 kbit/s for 150 ms is about three packets, plus the first burst.
        assert!(sent < 10, "{sent} of 40 retransmissions sent");
        assert!(
            now - start < MAX_HOLD,
            "nothing waits after they were dropped"
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

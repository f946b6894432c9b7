//! What a media connection sends, stream by stream: audio every frame (20 ms unless told
//! otherwise; with DTX, one packet in 400 ms while silent) with its audio level, and
//! video frames on each layer, with keyframes on schedule, on request and on resuming.
//!
//! A simulcast camera is one track with three encodings, as a browser sends it: each layer has
//! its own SSRC, sequence numbers, timestamps and picture ids, and every one of its packets
//! carries the mid and rid header extensions, because the node binds a layer's SSRC only from
//! packets that name both and forgets that binding whenever the connection is renegotiated.
//! The node tells the publisher which layers somebody needs (`publish-layers`); a layer nobody
//! needs stops, and starts again with a keyframe when it is wanted back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtc::rtp;
use treffpunkt_proto::random;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use crate::media::{self, Kind, Stamp, Vp8Fields};
use crate::outgoing::{
    DTX_INTERVAL_MS, MAX_LAYERS, OutgoingAudio, OutgoingVideo, SILENCE, VideoLayer,
};
use treffpunkt_media_node::session::interceptors::keyframe_request_ssrcs;

/// RFC 6464's voice activity flag, set on packets louder than silence.
const VOICE_ACTIVITY: u8 = 0x80;

pub(crate) fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// What the owner and the room change about what a participant sends, shared by its
/// connections in turn: the next index of each stream, the audio level, and which video layers
/// to send.
#[derive(Debug)]
pub(crate) struct Sending {
    audio: AtomicU32,
    video: [AtomicU32; MAX_LAYERS],
    audio_level: AtomicU8,
    active: [AtomicBool; MAX_LAYERS],
}

impl Sending {
    /// Nothing sent yet, every layer on, audio at `level`.
    pub fn new(level: u8) -> Self {
        Self {
            audio: AtomicU32::new(0),
            video: Default::default(),
            audio_level: AtomicU8::new(level.min(SILENCE)),
            active: std::array::from_fn(|_| AtomicBool::new(true)),
        }
    }

    fn counter(&self, kind: Kind, layer: u8) -> &AtomicU32 {
        match kind {
            Kind::Audio => &self.audio,
            Kind::Video => &self.video[usize::from(layer).min(MAX_LAYERS - 1)],
        }
    }

    fn next(&self, kind: Kind, layer: u8) -> u32 {
        self.counter(kind, layer).fetch_add(1, Ordering::Relaxed)
    }

    /// How many packets of `kind` were sent so far, over all layers.
    pub fn sent(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Audio => self.audio.load(Ordering::Relaxed),
            Kind::Video => self
                .video
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .fold(0, u32::wrapping_add),
        }
    }

    /// How many video packets of `layer` were sent so far (its next index).
    pub fn sent_layer(&self, layer: usize) -> u32 {
        self.video
            .get(layer)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// Sets the audio level from now on (RFC 6464: 0 loudest, 127 silence).
    pub fn set_audio_level(&self, level: u8) {
        self.audio_level
            .store(level.min(SILENCE), Ordering::Relaxed);
    }

    fn audio_level(&self) -> u8 {
        self.audio_level.load(Ordering::Relaxed)
    }

    /// Which video layers to send, as the node asked, lowest first; layers it did not mention
    /// stay as they are.
    pub fn set_active_layers(&self, active: &[bool]) {
        for (flag, on) in self.active.iter().zip(active) {
            flag.store(*on, Ordering::Relaxed);
        }
    }

    /// Which video layers are sent now.
    pub fn active_layers(&self) -> [bool; MAX_LAYERS] {
        std::array::from_fn(|layer| self.layer_active(layer as u8))
    }

    fn layer_active(&self, layer: u8) -> bool {
        self.active[usize::from(layer).min(MAX_LAYERS - 1)].load(Ordering::Relaxed)
    }
}

/// The header extension ids negotiated for a stream, and the values that never change.
#[derive(Clone, Debug, Default)]
pub(crate) struct Extensions {
    /// Put on every packet: mid and, for a simulcast layer, rid.
    pub fixed: Vec<(u8, Bytes)>,
    /// The audio level's id, for audio.
    pub audio_level: Option<u8>,
}

/// One stream of a connection and where its packets go.
pub(crate) struct Stream {
    pub source: String,
    pub layer: u8,
    pub ssrc: u32,
    pub payload_type: u8,
    pub extensions: Extensions,
    pub track: Arc<TrackLocalStaticRTP>,
    pub sending: Arc<Sending>,
}

impl Stream {
    fn header(&self, marker: bool, sequence_number: u16, timestamp: u32) -> rtp::Header {
        let mut header = rtp::Header {
            version: 2,
            marker,
            payload_type: self.payload_type,
            sequence_number,
            timestamp,
            ssrc: self.ssrc,
            ..Default::default()
        };
        for (id, value) in &self.extensions.fixed {
            // Ids come from the negotiation and values are a few bytes: this cannot fail, and
            // a packet without them would still be sent.
            let _ = header.set_extension(*id, value.clone());
        }
        header
    }

    /// Sends one packet of `kind`; `false` once the track is gone.
    async fn send(
        &self,
        kind: Kind,
        header: rtp::Header,
        size: usize,
        keyframe: bool,
        vp8: &Vp8Fields,
    ) -> bool {
        let stamp = Stamp {
            source: self.source.clone(),
            kind,
            layer: self.layer,
            index: self.sending.next(kind, self.layer),
            sent_at_us: unix_us(),
            keyframe,
        };
        let packet = rtp::Packet {
            header,
            payload: media::payload_part(&stamp, size, vp8),
        };
        self.track.write_rtp(packet).await.is_ok()
    }
}

/// Which audio frames go out: all of them, or with DTX, while the microphone is silent, one
/// in every [`DTX_INTERVAL_MS`].
#[derive(Debug)]
struct AudioFrames {
    dtx: bool,
    /// Frames in one DTX interval.
    dtx_frames: u32,
    /// Frames since the last packet went.
    since_sent: u32,
}

impl AudioFrames {
    fn new(dtx: bool, frame_ms: u32) -> Self {
        let dtx_frames = (DTX_INTERVAL_MS / frame_ms.max(1)).max(1);
        // The first frame goes at once.
        Self {
            dtx,
            dtx_frames,
            since_sent: dtx_frames,
        }
    }

    /// Whether the next frame goes out, at this level.
    fn next(&mut self, level: u8) -> bool {
        let send = !self.dtx || level < SILENCE || self.since_sent >= self.dtx_frames;
        self.since_sent = if send { 1 } else { self.since_sent + 1 };
        send
    }
}

/// Sends an audio packet every frame, each with the audio level set now; with DTX, a silent
/// microphone sends one every [`DTX_INTERVAL_MS`], its timestamps running on over the frames it
/// leaves out.
pub(crate) async fn send_audio(stream: Stream, audio: OutgoingAudio) {
    let frame_ms = audio.frame_ms.clamp(1, 120);
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(frame_ms)));
    let mut frames = AudioFrames::new(audio.dtx, frame_ms);
    let mut sequence_number = random::u32() as u16;
    let mut timestamp = random::u32();
    loop {
        tick.tick().await;
        let level = stream.sending.audio_level();
        if frames.next(level) {
            let mut header = stream.header(false, sequence_number, timestamp);
            if let Some(id) = stream.extensions.audio_level {
                let voice = if level < SILENCE { VOICE_ACTIVITY } else { 0 };
                let _ = header.set_extension(id, Bytes::copy_from_slice(&[voice | level]));
            }
            if !stream
                .send(
                    Kind::Audio,
                    header,
                    audio.packet_size,
                    false,
                    &Vp8Fields::default(),
                )
                .await
            {
                return;
            }
            sequence_number = sequence_number.wrapping_add(1);
        }
        // 48 kHz: the RTP clock of Opus.
        timestamp = timestamp.wrapping_add(48 * frame_ms);
    }
}

/// Sends the frames of one video layer while the node wants it: a keyframe on schedule, when
/// one was `requested`, and first after every pause.
pub(crate) async fn send_video_layer(
    stream: Stream,
    video: OutgoingVideo,
    spec: VideoLayer,
    requested: Arc<AtomicBool>,
) {
    let fps = video.fps.max(1);
    let interval = video.keyframe_interval.max(1);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / fps);
    let (delta_size, key_size) = video.frame_sizes_at(spec.bitrate(&video));
    // Each layer is its own RTP stream, as a browser's encoder sends it: its own random start
    // of sequence numbers, timestamps and picture ids, which the node must splice together
    // when it switches a subscriber between layers.
    let mut sequence_number = random::u32() as u16;
    let timestamp_base = random::u32();
    let mut picture_id = (random::u32() & 0x7fff) as u16;
    let mut tl0_picture_index = random::u32() as u8;
    // Frame slots since this connection started sending; the clock runs on while paused.
    let mut slots = 0u32;
    let mut was_active = false;
    loop {
        tick.tick().await;
        let slot = slots;
        slots = slots.wrapping_add(1);
        if !stream.sending.layer_active(stream.layer) {
            was_active = false;
            continue;
        }
        let keyframe =
            !was_active | slot.is_multiple_of(interval) | requested.swap(false, Ordering::Relaxed);
        was_active = true;
        let timestamp = timestamp_base.wrapping_add(slot.wrapping_mul(90_000 / fps));
        let sizes: Vec<usize> = video
            .packets_of(if keyframe { key_size } else { delta_size })
            .collect();
        for (i, size) in sizes.iter().enumerate() {
            let last = i + 1 == sizes.len();
            let header = stream.header(last, sequence_number, timestamp);
            let vp8 = Vp8Fields {
                picture_id,
                tl0_picture_index,
                starts_frame: i == 0,
                size: (spec.width, spec.height),
            };
            if !stream
                .send(Kind::Video, header, *size, keyframe, &vp8)
                .await
            {
                return;
            }
            sequence_number = sequence_number.wrapping_add(1);
        }
        picture_id = (picture_id + 1) & 0x7fff;
        tl0_picture_index = tl0_picture_index.wrapping_add(1);
    }
}

/// Marks the layer a keyframe request of the node names (by SSRC); a request that names none
/// of them asks every layer.
pub(crate) async fn listen_for_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
    layers: Vec<(u32, Arc<AtomicBool>)>,
) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        for ssrc in keyframe_request_ssrcs(&packets) {
            match layers.iter().find(|(layer_ssrc, _)| *layer_ssrc == ssrc) {
                Some((_, requested)) => requested.store(true, Ordering::Relaxed),
                None => {
                    for (_, requested) in &layers {
                        requested.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TALKING: u8 = 30;

    #[test]
    fn the_node_switches_layers_off_and_on_and_counts_stay_per_layer() {
        let sending = Sending::new(200);
        assert_eq!(sending.audio_level(), SILENCE, "clamped to silence");
        assert_eq!(sending.active_layers(), [true; 3]);
        sending.set_active_layers(&[true, false]);
        assert_eq!(sending.active_layers(), [true, false, true]);
        for _ in 0..3 {
            sending.next(Kind::Video, 2);
        }
        sending.next(Kind::Video, 0);
        sending.next(Kind::Audio, 0);
        assert_eq!(
            (sending.sent_layer(0), sending.sent_layer(2)),
            (1, 3),
            "each layer numbers its own packets"
        );
        assert_eq!(
            (sending.sent(Kind::Video), sending.sent(Kind::Audio)),
            (4, 1)
        );
    }

    #[test]
    fn a_silent_microphone_in_dtx_sends_a_packet_in_400_ms_and_a_voice_every_frame() {
        let sent = |frames: &mut AudioFrames, levels: &[u8]| -> Vec<usize> {
            (0..levels.len())
                .filter(|&i| frames.next(levels[i]))
                .collect()
        };
        let silence = [SILENCE; 45];
        // 20 ms frames: the first at once, then every twentieth.
        assert_eq!(sent(&mut AudioFrames::new(true, 20), &silence), [0, 20, 40]);
        // 60 ms frames: every sixth (360 ms, the whole frames within 400 ms).
        assert_eq!(
            sent(&mut AudioFrames::new(true, 60), &silence[..13]),
            [0, 6, 12]
        );
        // Without DTX, silence goes every frame.
        assert_eq!(
            sent(&mut AudioFrames::new(false, 20), &silence[..3]),
            [0, 1, 2]
        );
        // A voice goes every frame; after it falls silent, the next packet comes 400 ms later.
        let mut levels = vec![TALKING; 3];
        levels.extend([SILENCE; 21]);
        assert_eq!(
            sent(&mut AudioFrames::new(true, 20), &levels),
            [0, 1, 2, 22]
        );
    }
}

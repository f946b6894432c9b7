//! What the core keeps of one published track: its simulcast layers as the node sees them
//! arrive, and one subscription per participant who receives it.

use std::time::{Duration, Instant};

use super::allocation::{Choice, LayerInfo};
use super::forwarder::Forwarder;
use super::keyframe::KeyframeRequests;
use super::{Codec, DownTrack, PeerId, Source};

/// A layer that sent nothing for this long is not there (the publisher dropped it for lack of
/// uplink or CPU, or the camera went off).
pub const LAYER_SILENCE: Duration = Duration::from_millis(1500);
/// How long a layer that was asked for may take to arrive before it counts as missing.
const RESUME_GRACE: Duration = Duration::from_secs(2);
/// How long nobody must want a layer before the publisher is told to stop encoding it.
pub const PAUSE_AFTER: Duration = Duration::from_secs(3);
/// Weight of the newest interval in a layer's bitrate average.
const RATE_WEIGHT: f64 = 0.3;

/// The bitrate a layer is assumed to need before it has been measured, by its height (or its
/// place among three layers when the height is not known yet).
fn nominal_bitrate(height: Option<u32>, index: usize, count: usize) -> u64 {
    let height = height.unwrap_or(match (count, index) {
        (1, _) => 360,
        (_, 0) => 180,
        (_, 1) => 360,
        _ => 720,
    });
    match height {
        0..=240 => 150_000,
        241..=400 => 500_000,
        401..=560 => 900_000,
        _ => 1_500_000,
    }
}

/// One simulcast layer (or the only layer of a plain track).
#[derive(Debug)]
pub struct Layer {
    /// The SSRC it arrives on, once it has.
    pub ssrc: Option<u32>,
    /// Bytes since the last measurement.
    bytes: u64,
    /// The measured bitrate, bits per second.
    rate: Option<f64>,
    /// The picture height, from its last keyframe.
    pub height: Option<u32>,
    /// When its last packet arrived.
    last_packet: Option<Instant>,
    /// Keyframe requests for this layer, rate-limited.
    pub keyframes: KeyframeRequests,
    /// Whether the publisher has been told to send it (it is, until told otherwise).
    pub active: bool,
    /// When it was last asked for, to give the publisher time to start it again.
    activated_at: Option<Instant>,
    /// Since when nobody has wanted it.
    unused_since: Option<Instant>,
}

impl Layer {
    fn new() -> Self {
        Self {
            ssrc: None,
            bytes: 0,
            rate: None,
            height: None,
            last_packet: None,
            keyframes: KeyframeRequests::default(),
            active: true,
            activated_at: None,
            unused_since: None,
        }
    }

    /// Counts a packet of `len` bytes.
    pub fn received(&mut self, now: Instant, len: usize) {
        self.bytes += len as u64;
        self.last_packet = Some(now);
    }

    /// Whether packets are arriving.
    pub fn live(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|at| now.saturating_duration_since(at) < LAYER_SILENCE)
    }

    /// Whether a subscriber may be given this layer: it arrives, or the node paused it and can
    /// have it back, or it was asked for a moment ago.
    pub fn usable(&self, now: Instant) -> bool {
        self.ssrc.is_some()
            && (self.live(now)
                || !self.active
                || self
                    .activated_at
                    .is_some_and(|at| now.saturating_duration_since(at) < RESUME_GRACE))
    }

    /// Folds the bytes since the last call into the bitrate average.
    pub fn measure(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let bytes = std::mem::take(&mut self.bytes);
        if !self.active || bytes == 0 {
            // A paused or silent layer keeps what it cost when it was sent.
            return;
        }
        let sample = bytes as f64 * 8.0 / seconds;
        self.rate = Some(match self.rate {
            Some(rate) => rate + RATE_WEIGHT * (sample - rate),
            None => sample,
        });
    }

    /// The measured bitrate, for audio.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Records whether someone wants this layer; returns `Some(active)` when the publisher must
    /// be told to start or stop it.
    pub fn want(&mut self, now: Instant, wanted: bool) -> Option<bool> {
        if wanted {
            self.unused_since = None;
            if !self.active {
                self.active = true;
                self.activated_at = Some(now);
                return Some(true);
            }
            return None;
        }
        let since = *self.unused_since.get_or_insert(now);
        if self.active && now.saturating_duration_since(since) >= PAUSE_AFTER {
            self.active = false;
            return Some(false);
        }
        None
    }
}

/// One subscriber's view of a publication.
#[derive(Debug)]
pub struct Subscription {
    /// Who receives it.
    pub subscriber: PeerId,
    /// The down-track's forwarding state.
    pub forwarder: Forwarder,
    /// Negotiated and connected: packets may flow.
    pub ready: bool,
    /// When the forwarder started waiting for a keyframe (for retries).
    pub waiting_since: Option<Instant>,
    /// The allocation's last choice for it.
    pub choice: Choice,
}

/// One published track.
#[derive(Debug)]
pub struct Publication {
    /// Whose.
    pub publisher: PeerId,
    /// The transport's key for the track (its receiver on the publisher's connection).
    pub track: u64,
    /// Its codec.
    pub codec: Codec,
    /// Microphone, camera or screen.
    pub source: Source,
    /// The media stream id subscribers see.
    pub stream_id: String,
    /// The track id subscribers see.
    pub track_id: String,
    /// Its layers, lowest first; one for a track without simulcast.
    pub layers: Vec<Layer>,
    /// Everyone who receives it.
    pub subscriptions: Vec<Subscription>,
}

impl Publication {
    /// A publication with `layer_count` layers, none arrived yet.
    pub fn new(
        publisher: PeerId,
        track: u64,
        codec: Codec,
        source: Source,
        stream_id: String,
        track_id: String,
        layer_count: usize,
    ) -> Self {
        Self {
            publisher,
            track,
            codec,
            source,
            stream_id,
            track_id,
            layers: (0..layer_count.max(1)).map(|_| Layer::new()).collect(),
            subscriptions: Vec::new(),
        }
    }

    /// The down-track a subscriber gets.
    pub fn down_track(&self, subscriber: PeerId, ssrc: u32) -> DownTrack {
        DownTrack {
            subscriber,
            ssrc,
            publisher: self.publisher,
            kind: self.codec.kind(),
            codec: self.codec,
            stream_id: self.stream_id.clone(),
            track_id: self.track_id.clone(),
        }
    }

    /// The layers a subscriber may be given now, lowest first, as (layer index, what it costs).
    pub fn usable_layers(&self, now: Instant) -> Vec<(usize, LayerInfo)> {
        let count = self.layers.len();
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, layer)| layer.usable(now))
            .map(|(index, layer)| {
                let bitrate = layer.rate.map_or_else(
                    || nominal_bitrate(layer.height, index, count),
                    |rate| rate as u64,
                );
                (
                    index,
                    LayerInfo {
                        bitrate,
                        height: layer.height,
                    },
                )
            })
            .collect()
    }

    /// The highest layer at or below `layer` that arrives now, else the lowest that does.
    pub fn live_layer_near(&self, now: Instant, layer: usize) -> Option<usize> {
        let live: Vec<usize> = (0..self.layers.len())
            .filter(|index| self.layers[*index].live(now))
            .collect();
        live.iter()
            .rev()
            .find(|index| **index <= layer)
            .or(live.first())
            .copied()
    }

    /// What the publication costs a subscriber now, for audio: its measured bitrate, or what
    /// Opus usually takes.
    pub fn audio_cost(&self) -> u64 {
        self.layers
            .first()
            .and_then(Layer::rate)
            .map_or(50_000, |rate| rate as u64)
    }
}

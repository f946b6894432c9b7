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
    /// be told to start or stop it. A layer that has not arrived yet is never stopped.
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
        if self.ssrc.is_none() {
            // Not arrived yet, so nobody could have been given it: the publisher's connection
            // may still be coming up (a slow or busy line takes seconds). Told to stop now, it
            // would never send it, and nobody would ever see it.
            self.unused_since = None;
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
    /// While paused for bandwidth: not tried again before this.
    pub resume_not_before: Option<Instant>,
    /// How long the next failed resumption holds it paused.
    pub resume_backoff: Duration,
    /// When it was last resumed after a pause for bandwidth.
    pub resumed_at: Option<Instant>,
    /// After a failed move up: not moved up again before this.
    pub rise_not_before: Option<Instant>,
    /// How long the next failed move up holds it where it is.
    pub rise_backoff: Duration,
    /// When it last moved up a layer.
    pub rose_at: Option<Instant>,
    /// Since when a video that plays has had too little bandwidth even for its lowest layer,
    /// while it is kept playing for [`PAUSE_GRACE`].
    pub short_since: Option<Instant>,
    /// When its last grace began.
    pub graced_at: Option<Instant>,
    /// The subscriber's estimate when the video last started playing.
    pub started_at_estimate: Option<u64>,
}

/// How long a video paused for bandwidth stays paused before it is tried again, at first.
pub const RESUME_BACKOFF: Duration = Duration::from_secs(8);
/// The longest it stays paused between two tries.
const MAX_RESUME_BACKOFF: Duration = Duration::from_secs(60);
/// A resumed video that is paused again within this time counts as a failed try; so does a
/// move up that falls back within it.
const RESUME_TRIAL: Duration = Duration::from_secs(5);
/// How long a video stays at a layer it moved up to before it may move up again.
const RISE_PROOF: Duration = Duration::from_millis(1500);
/// How long a video stays at its layer after a failed move up, at first.
pub const RISE_BACKOFF: Duration = Duration::from_secs(2);
/// The longest it stays: short, so that a line that got better is found out within seconds
/// (a playing video's move up costs less than resuming a paused one: the pacer spreads it, and
/// a probe of the line comes first). A line that cleared just after a failed move up gets its
/// next try this long after, plus the probe's few hundred milliseconds.
const MAX_RISE_BACKOFF: Duration = Duration::from_millis(2500);
/// How long a video that plays keeps its lowest layer when the estimate no longer leaves room
/// even for that, before it is paused. A failed move up (a shaper with a bucket lets a probe
/// through, and stops the next layer) drives the estimate down while the higher layer still
/// flows until the lower one's keyframe: for a second or so it falls below what the line
/// carries. A pause then would hold the video for [`RESUME_BACKOFF`]; a line that truly cannot
/// carry the lowest layer pauses it this much later.
pub const PAUSE_GRACE: Duration = Duration::from_secs(2);
/// How long a video stays paused that was pushed aside rather than failed: the estimate did
/// not fall since it started, so another video took its share (a new dominant speaker, or
/// layers whose measured bitrate rose with a keyframe). Held as long as a failed try, it missed
/// eight seconds of a meeting whose estimates were still growing (measured: 70 such pauses
/// among 16 people in their first five seconds).
pub const DISPLACED_HOLD: Duration = Duration::from_secs(1);
/// At most one grace in this time: a line whose estimate keeps falling short pauses the video at
/// once the second time.
pub const GRACE_EVERY: Duration = Duration::from_secs(10);

impl Subscription {
    /// Whether a video paused for bandwidth must stay paused for now.
    pub fn held(&self, now: Instant) -> bool {
        self.choice == Err(super::allocation::Paused::Bandwidth)
            && self.resume_not_before.is_some_and(|at| now < at)
    }

    /// Whether a video may move above its layer now: not while a failed move up is recent,
    /// and one layer at a time, each proving itself first: the forwarder must have carried the
    /// layer chosen for a while (a switch waits for a keyframe, and a layer the publisher had
    /// stopped takes a moment to start again, with a lower one standing in; until then the line
    /// has not been tried).
    pub fn may_rise(&self, now: Instant) -> bool {
        // A video just resumed after a pause for bandwidth first shows that its lowest layer
        // holds (on a line that paused it, a move up right away mostly fails again).
        self.resumed_at
            .is_none_or(|at| now.saturating_duration_since(at) >= RESUME_TRIAL)
            && self.rise_not_before.is_none_or(|at| now >= at)
            && self.choice.ok() == self.forwarder.target()
            && self
                .forwarder
                .on_target_since()
                .is_some_and(|at| now.saturating_duration_since(at) >= RISE_PROOF)
    }

    /// Whether the allocation's pause for bandwidth (`choice` is its verdict) is to wait: the
    /// video plays, and has been short of bandwidth for less than [`PAUSE_GRACE`]. A grace
    /// begins only for a video that played steadily: not one just resumed (a line that paused
    /// it once is not given more time to fail again), and not twice within [`GRACE_EVERY`].
    pub fn in_grace(&mut self, now: Instant, choice: Choice) -> bool {
        use super::allocation::Paused;
        if choice != Err(Paused::Bandwidth) || self.choice.is_err() {
            self.short_since = None;
            return false;
        }
        if let Some(since) = self.short_since {
            return now.saturating_duration_since(since) < PAUSE_GRACE;
        }
        let steady = self
            .resumed_at
            .is_none_or(|at| now.saturating_duration_since(at) >= RESUME_TRIAL)
            && self
                .graced_at
                .is_none_or(|at| now.saturating_duration_since(at) >= GRACE_EVERY);
        if steady {
            self.short_since = Some(now);
            self.graced_at = Some(now);
        }
        steady
    }

    /// Notes a change of the allocation's choice. A line that carried a short probe may still
    /// not carry a move up (a shaper with a bucket lets a probe through and stops the video
    /// after it), and each failed move costs the subscriber's audio a moment: failed tries are
    /// spaced out further and further, a video that played for a while starts over.
    pub fn choice_changed(&mut self, now: Instant, before: Choice, after: Choice, estimate: u64) {
        use super::allocation::Paused;
        let recently_rose = self
            .rose_at
            .is_some_and(|at| now.saturating_duration_since(at) < RESUME_TRIAL);
        match (before, after) {
            (Ok(from), Ok(to)) if to > from => self.rose_at = Some(now),
            (Ok(from), _) if after.map_or(after == Err(Paused::Bandwidth), |to| to < from) => {
                self.rise_backoff = if recently_rose {
                    (self.rise_backoff * 2).min(MAX_RISE_BACKOFF)
                } else {
                    RISE_BACKOFF
                };
                if recently_rose {
                    self.rise_not_before = Some(now + self.rise_backoff);
                }
                self.rose_at = None;
            }
            _ => {}
        }
        match (before, after) {
            (Err(_), Ok(_)) => {
                self.started_at_estimate = Some(estimate);
                if before == Err(Paused::Bandwidth) {
                    self.resumed_at = Some(now);
                }
            }
            // Pushed aside while the line held: tried again soon, and nothing failed.
            (Ok(_), Err(Paused::Bandwidth))
                if self
                    .started_at_estimate
                    .is_some_and(|at_start| estimate >= at_start) =>
            {
                self.resume_not_before = Some(now + DISPLACED_HOLD);
                self.resumed_at = None;
            }
            // A video that has not played yet (the estimate of a new subscriber is still
            // growing) was not tried, so nothing failed: it plays as soon as it fits.
            (Ok(_), Err(Paused::Bandwidth)) => {
                let failed = self
                    .resumed_at
                    .is_some_and(|at| now.saturating_duration_since(at) < RESUME_TRIAL);
                self.resume_backoff = if failed {
                    (self.resume_backoff * 2).min(MAX_RESUME_BACKOFF)
                } else {
                    RESUME_BACKOFF
                };
                self.resume_not_before = Some(now + self.resume_backoff);
                self.resumed_at = None;
            }
            _ => {}
        }
    }
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
    /// The links to other nodes of its room, which get every packet of it (a local
    /// publication's; empty for a remote participant's).
    pub relays: Vec<super::LinkId>,
    /// The layers each link asked for; a link not named here wants them all.
    pub relay_wants: Vec<(super::LinkId, Vec<bool>)>,
    /// A microphone or camera of a large room that has been off since it was announced:
    /// nobody is subscribed to it until it is first switched on (see
    /// [`super::LARGE_ROOM`]).
    pub dormant: bool,
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
            relays: Vec::new(),
            relay_wants: Vec::new(),
            dormant: false,
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

    /// The highest layer at or below `layer` that arrives now. Never a higher one: a layer
    /// chosen to fit a line must not be stood in for by one that does not fit (the subscriber
    /// waits the moment the publisher takes to start the chosen one).
    pub fn live_layer_near(&self, now: Instant, layer: usize) -> Option<usize> {
        (0..=layer.min(self.layers.len().saturating_sub(1)))
            .rev()
            .find(|index| self.layers[*index].live(now))
    }

    /// Whether `link` wants `layer` (it does until it says otherwise).
    pub fn relays_layer(&self, link: super::LinkId, layer: usize) -> bool {
        self.relay_wants
            .iter()
            .find(|(other, _)| *other == link)
            .is_none_or(|(_, flags)| flags.get(layer).copied().unwrap_or(true))
    }

    /// Adds to `wanted` (one flag per layer) the layers the links want.
    pub fn add_relay_wants(&self, wanted: &mut [bool]) {
        for link in &self.relays {
            match self.relay_wants.iter().find(|(other, _)| other == link) {
                Some((_, flags)) => {
                    for (want, flag) in wanted.iter_mut().zip(flags) {
                        *want |= *flag;
                    }
                }
                None => wanted.iter_mut().for_each(|want| *want = true),
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::allocation::Paused;

    fn subscription() -> Subscription {
        Subscription {
            subscriber: PeerId(2),
            forwarder: Forwarder::new(1, 90_000, true),
            ready: true,
            waiting_since: None,
            choice: Err(Paused::NotWanted),
            resume_not_before: None,
            resume_backoff: RESUME_BACKOFF,
            resumed_at: None,
            rise_not_before: None,
            rise_backoff: RISE_BACKOFF,
            rose_at: None,
            short_since: None,
            graced_at: None,
            started_at_estimate: None,
        }
    }

    /// Records the allocation's `choice` as `apply_choice` does.
    fn choose(subscription: &mut Subscription, now: Instant, choice: Choice, estimate: u64) {
        let before = std::mem::replace(&mut subscription.choice, choice);
        subscription.choice_changed(now, before, choice, estimate);
    }

    #[test]
    fn a_video_pushed_aside_while_the_line_held_is_tried_again_soon() {
        let start = Instant::now();
        let mut video = subscription();
        choose(&mut video, start, Ok(0), 1_600_000);
        // The estimate grew, but another video took the share.
        let at = start + Duration::from_secs(1);
        choose(&mut video, at, Err(Paused::Bandwidth), 2_200_000);
        assert!(video.held(at + DISPLACED_HOLD / 2));
        assert!(
            !video.held(at + DISPLACED_HOLD),
            "tried again after a moment"
        );
        assert_eq!(video.resume_backoff, RESUME_BACKOFF, "nothing failed");
    }

    #[test]
    fn a_video_paused_because_the_estimate_fell_is_held_and_each_failed_try_longer() {
        let start = Instant::now();
        let mut video = subscription();
        choose(&mut video, start, Ok(0), 1_600_000);
        let at = start + Duration::from_secs(10);
        choose(&mut video, at, Err(Paused::Bandwidth), 900_000);
        assert!(video.held(at + RESUME_BACKOFF - Duration::from_millis(1)));
        assert!(!video.held(at + RESUME_BACKOFF));
        // Resumed, and paused again at once as the estimate falls: a failed try.
        let resumed = at + RESUME_BACKOFF;
        choose(&mut video, resumed, Ok(0), 1_000_000);
        let again = resumed + Duration::from_secs(1);
        choose(&mut video, again, Err(Paused::Bandwidth), 800_000);
        assert!(video.held(again + RESUME_BACKOFF * 2 - Duration::from_millis(1)));
    }
}

//! The simulated room the simulcast, bandwidth, speaker, screen share and chat tests drive on a
//! virtual clock: a simulated publisher sends three VP8 layers at 30 frames a second and answers keyframe requests on the
//! next frame, as a browser does.

use super::*;
pub(super) use crate::core::vp8::test_payload as vp8_payload;

pub(super) const LAYER_HEIGHTS: [u16; 3] = [180, 360, 720];
/// Bytes per frame of each layer: about 150, 500 and 1500 kbit/s at 30 frames a second.
pub(super) const FRAME_BYTES: [usize; 3] = [625, 2083, 6250];
pub(super) const FRAME: Duration = Duration::from_micros(33_333);
pub(super) const MAX_PACKET_BYTES: usize = 1200;

/// One layer of the simulated publisher.
pub(super) struct SimLayer {
    pub(super) ssrc: u32,
    pub(super) sequence_number: u16,
    pub(super) timestamp: u32,
    pub(super) picture_id: u16,
    pub(super) tl0: u8,
    pub(super) keyframe_due: bool,
    pub(super) sending: bool,
    /// Whether a packet of it has reached the node, which learnt its SSRC then.
    pub(super) arrived: bool,
}

/// What a subscriber received on one down-track.
#[derive(Clone, Debug)]
pub(super) struct Received {
    pub(super) at: Instant,
    /// The layer the packet came from.
    pub(super) layer: usize,
    pub(super) keyframe_start: bool,
    pub(super) rewrite: Rewrite,
}

/// A room on a virtual clock: publisher 1 sends simulcast video (and audio), the others
/// subscribe.
pub(super) struct Sim {
    pub(super) core: Core,
    pub(super) now: Instant,
    pub(super) layers: Vec<SimLayer>,
    pub(super) audio_sequence: u16,
    pub(super) next_frame: Instant,
    pub(super) next_audio: Instant,
    /// Down-track SSRC of each subscriber's video from 1.
    pub(super) video_tracks: HashMap<PeerId, u32>,
    pub(super) received: HashMap<PeerId, Vec<Received>>,
    pub(super) audio_received: HashMap<PeerId, Vec<Instant>>,
    pub(super) outputs: Vec<(Instant, Output)>,
    pub(super) out: Vec<(PeerId, Rewrite)>,
    /// While the publisher's connection is still coming up: when its camera first sends. Until
    /// then the camera is only announced, as a browser's offer names it.
    pub(super) camera_up_at: Option<Instant>,
}

impl Sim {
    /// Publisher 1 and `subscribers` others, every down-track negotiated and connected.
    pub(super) fn new(subscribers: u64) -> Self {
        Self::with_estimate(subscribers, None)
    }

    /// The same, with each subscriber's downlink estimate known before its down-tracks connect.
    pub(super) fn with_estimate(subscribers: u64, estimate: Option<u64>) -> Self {
        Self::build(subscribers, estimate, None)
    }

    /// Publisher 1 and `subscribers` others, whose down-tracks are ready while publisher 1's
    /// camera is only announced: its connection comes up and its layers arrive `after` that.
    pub(super) fn with_slow_camera(subscribers: u64, after: Duration) -> Self {
        Self::build(subscribers, None, Some(after))
    }

    fn build(subscribers: u64, estimate: Option<u64>, camera_after: Option<Duration>) -> Self {
        let start = Instant::now();
        let mut core = Core::new(7);
        for peer in 1..=subscribers + 1 {
            core.join(
                PeerId(peer),
                JoinRequest {
                    room: "public/sim".into(),
                    participant_id: format!("p{peer}"),
                    display_name: format!("P{peer}"),
                    max_participants: 0,
                    last_n: 0,
                    moderator: false,
                    lobby: false,
                    first_moderates: false,
                },
            )
            .unwrap();
            if let Some(estimate) = estimate
                && peer > 1
            {
                core.set_estimate(PeerId(peer), estimate);
            }
        }
        let mut sim = Self {
            core,
            now: start,
            layers: (0..3)
                .map(|layer| SimLayer {
                    ssrc: 1000 + layer as u32,
                    sequence_number: 100 * layer as u16,
                    timestamp: 1_000_000 * layer as u32,
                    picture_id: 5000 * layer as u16,
                    tl0: 50 * layer as u8,
                    keyframe_due: true,
                    sending: true,
                    arrived: false,
                })
                .collect(),
            audio_sequence: 0,
            next_frame: start,
            next_audio: start,
            video_tracks: HashMap::new(),
            received: HashMap::new(),
            audio_received: HashMap::new(),
            outputs: Vec::new(),
            out: Vec::new(),
            camera_up_at: camera_after.map(|after| start + after),
        };
        sim.core.publish(
            start,
            PeerId(1),
            PublishedLayer {
                track: 1,
                ssrc: 900,
                layer: 0,
                layer_count: 1,
                codec: Codec::Opus,
                source: Source::Microphone,
            },
        );
        if camera_after.is_some() {
            let camera = OfferedTrack {
                track: 2,
                layer_count: 3,
                codec: Codec::Vp8,
                source: Source::Camera,
            };
            sim.core.announce(start, PeerId(1), camera);
        } else {
            (0..3).for_each(|layer| sim.layer_arrives(layer));
        }
        sim.collect();
        let tracks: Vec<DownTrack> = sim
            .outputs
            .iter()
            .filter_map(|(_, o)| match o {
                Output::AddDownTrack(track) => Some(track.clone()),
                _ => None,
            })
            .collect();
        for track in tracks {
            if track.kind == MediaKind::Video {
                sim.video_tracks.insert(track.subscriber, track.ssrc);
            }
            sim.core
                .down_track_ready(start, track.subscriber, track.ssrc);
        }
        sim.collect();
        sim
    }

    /// The first packet of camera layer `layer` reaches the node: it learns the layer's SSRC.
    fn layer_arrives(&mut self, layer: usize) {
        self.layers[layer].arrived = true;
        self.core.publish(
            self.now,
            PeerId(1),
            PublishedLayer {
                track: 2,
                ssrc: self.layers[layer].ssrc,
                layer,
                layer_count: 3,
                codec: Codec::Vp8,
                source: Source::Camera,
            },
        );
    }

    pub(super) fn collect(&mut self) {
        while let Some(output) = self.core.poll_output() {
            if let Output::RequestKeyframe {
                publisher: PeerId(1),
                ssrc,
            } = output
                && let Some(layer) = self.layers.iter_mut().find(|l| l.ssrc == ssrc)
            {
                layer.keyframe_due = true;
            }
            if let Output::PublisherLayers {
                publisher: PeerId(1),
                active,
                ..
            } = &output
            {
                for (layer, active) in self.layers.iter_mut().zip(active) {
                    if *active && !layer.sending {
                        // A resumed encoding starts with a keyframe.
                        layer.keyframe_due = true;
                    }
                    layer.sending = *active;
                }
            }
            self.outputs.push((self.now, output));
        }
    }

    pub(super) fn send(
        &mut self,
        ssrc: u32,
        sequence_number: u16,
        timestamp: u32,
        payload: &[u8],
        layer: usize,
        keyframe_start: bool,
    ) {
        let forwarded = self.core.forward(
            self.now,
            PeerId(1),
            ssrc,
            sequence_number,
            timestamp,
            payload,
            &mut self.out,
        );
        assert!(forwarded.is_some());
        for (subscriber, rewrite) in &self.out {
            if layer == usize::MAX {
                self.audio_received
                    .entry(*subscriber)
                    .or_default()
                    .push(self.now);
            } else {
                self.received
                    .entry(*subscriber)
                    .or_default()
                    .push(Received {
                        at: self.now,
                        layer,
                        keyframe_start,
                        rewrite: *rewrite,
                    });
            }
        }
    }

    /// Runs the clock for `duration`, sending audio every 20 ms and a frame of every sending
    /// layer every 33 ms; `each` runs every 100 ms.
    pub(super) fn run(&mut self, duration: Duration, mut each: impl FnMut(&mut Self)) {
        let end = self.now + duration;
        let mut next_check = self.now;
        while self.now < end {
            if self.now >= next_check {
                each(self);
                next_check += Duration::from_millis(100);
            }
            if self.now >= self.next_audio {
                self.audio_sequence = self.audio_sequence.wrapping_add(1);
                let (seq, ts) = (self.audio_sequence, u32::from(self.audio_sequence) * 960);
                self.send(900, seq, ts, &[0x78; 80], usize::MAX, true);
                self.next_audio += Duration::from_millis(20);
            }
            if self.camera_up_at.is_some_and(|up| self.now >= up) {
                self.camera_up_at = None;
            }
            if self.now >= self.next_frame && self.camera_up_at.is_some() {
                // Nothing leaves before the connection is up.
                self.next_frame += FRAME;
            }
            if self.now >= self.next_frame {
                for index in 0..self.layers.len() {
                    if !self.layers[index].sending {
                        continue;
                    }
                    if !self.layers[index].arrived {
                        self.layer_arrives(index);
                    }
                    let layer = &mut self.layers[index];
                    let keyframe = std::mem::take(&mut layer.keyframe_due);
                    layer.picture_id = (layer.picture_id + 1) & 0x7fff;
                    if keyframe {
                        layer.tl0 = layer.tl0.wrapping_add(1);
                    }
                    layer.timestamp = layer.timestamp.wrapping_add(3000);
                    let bytes = FRAME_BYTES[index] * if keyframe { 4 } else { 1 };
                    let packets = bytes.div_ceil(MAX_PACKET_BYTES);
                    let packet_bytes = bytes.div_ceil(packets);
                    let (ssrc, timestamp, picture_id, tl0) =
                        (layer.ssrc, layer.timestamp, layer.picture_id, layer.tl0);
                    for packet in 0..packets {
                        let layer = &mut self.layers[index];
                        layer.sequence_number = layer.sequence_number.wrapping_add(1);
                        let sequence_number = layer.sequence_number;
                        let start = packet == 0;
                        let payload = vp8_payload(
                            picture_id,
                            tl0,
                            start,
                            keyframe,
                            LAYER_HEIGHTS[index],
                            packet_bytes,
                        );
                        self.send(
                            ssrc,
                            sequence_number,
                            timestamp,
                            &payload,
                            index,
                            start && keyframe,
                        );
                    }
                }
                self.next_frame += FRAME;
            }
            self.now += Duration::from_millis(1);
            while let Some(due) = self.core.poll_timeout() {
                if due > self.now {
                    break;
                }
                self.core.handle_timeout(self.now);
                self.collect();
            }
        }
    }

    /// The layer subscriber `peer` received last, if any.
    pub(super) fn layer_of(&self, peer: u64) -> Option<usize> {
        self.received.get(&PeerId(peer))?.last().map(|r| r.layer)
    }

    /// Runs until subscriber `peer` receives `layer` (and nothing else since); returns how long
    /// it took, or `None` within `limit`.
    pub(super) fn time_until_layer(
        &mut self,
        peer: u64,
        layer: usize,
        limit: Duration,
        each: impl Fn(&mut Core),
    ) -> Option<Duration> {
        let from = self.now;
        let mut reached = None;
        self.run(limit, |sim| {
            each(&mut sim.core);
            if reached.is_none() && sim.layer_of(peer) == Some(layer) {
                reached = Some(sim.now - from);
            }
        });
        reached
    }
}

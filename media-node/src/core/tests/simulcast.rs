//! Simulcast, bandwidth, speakers, screen share and chat, on a virtual clock: a simulated
//! publisher sends three VP8 layers at 30 frames a second and answers keyframe requests on the
//! next frame, as a browser does.

use super::*;

const LAYER_HEIGHTS: [u16; 3] = [180, 360, 720];
/// Bytes per frame of each layer: about 150, 500 and 1500 kbit/s at 30 frames a second.
const FRAME_BYTES: [usize; 3] = [625, 2083, 6250];
const FRAME: Duration = Duration::from_micros(33_333);
const MAX_PACKET_BYTES: usize = 1200;

/// A VP8 payload: descriptor with a 15-bit picture id and TL0PICIDX, then the frame header.
fn vp8_payload(
    picture_id: u16,
    tl0: u8,
    start: bool,
    keyframe: bool,
    height: u16,
    len: usize,
) -> Vec<u8> {
    let mut payload = vec![
        0x80 | if start { 0x10 } else { 0 },
        0xc0,
        0x80 | (picture_id >> 8) as u8,
        picture_id as u8,
        tl0,
    ];
    if start {
        payload.push(if keyframe { 0x00 } else { 0x01 });
        payload.extend_from_slice(&[0x00, 0x00]);
        if keyframe {
            let width = height * 16 / 9;
            payload.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            payload.extend_from_slice(&width.to_le_bytes());
            payload.extend_from_slice(&height.to_le_bytes());
        }
    }
    payload.resize(len.max(payload.len()), 0);
    payload
}

/// One layer of the simulated publisher.
struct SimLayer {
    ssrc: u32,
    sequence_number: u16,
    timestamp: u32,
    picture_id: u16,
    tl0: u8,
    keyframe_due: bool,
    sending: bool,
}

/// What a subscriber received on one down-track.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    /// The layer the packet came from.
    layer: usize,
    keyframe_start: bool,
    rewrite: Rewrite,
}

/// A room on a virtual clock: publisher 1 sends simulcast video (and audio), the others
/// subscribe.
struct Sim {
    core: Core,
    now: Instant,
    layers: Vec<SimLayer>,
    audio_sequence: u16,
    next_frame: Instant,
    next_audio: Instant,
    /// Down-track SSRC of each subscriber's video from 1.
    video_tracks: HashMap<PeerId, u32>,
    received: HashMap<PeerId, Vec<Received>>,
    audio_received: HashMap<PeerId, Vec<Instant>>,
    outputs: Vec<(Instant, Output)>,
    out: Vec<(PeerId, Rewrite)>,
}

impl Sim {
    /// Publisher 1 and `subscribers` others, every down-track negotiated and connected.
    fn new(subscribers: u64) -> Self {
        Self::with_estimate(subscribers, None)
    }

    /// The same, with each subscriber's downlink estimate known before its down-tracks connect.
    fn with_estimate(subscribers: u64, estimate: Option<u64>) -> Self {
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
        for layer in 0..3 {
            sim.core.publish(
                start,
                PeerId(1),
                PublishedLayer {
                    track: 2,
                    ssrc: 1000 + layer as u32,
                    layer,
                    layer_count: 3,
                    codec: Codec::Vp8,
                    source: Source::Camera,
                },
            );
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

    fn collect(&mut self) {
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

    fn send(
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
    fn run(&mut self, duration: Duration, mut each: impl FnMut(&mut Self)) {
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
            if self.now >= self.next_frame {
                for index in 0..self.layers.len() {
                    if !self.layers[index].sending {
                        continue;
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
    fn layer_of(&self, peer: u64) -> Option<usize> {
        self.received.get(&PeerId(peer))?.last().map(|r| r.layer)
    }

    /// Runs until subscriber `peer` receives `layer` (and nothing else since); returns how long
    /// it took, or `None` within `limit`.
    fn time_until_layer(
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

#[test]
fn the_layer_follows_the_bandwidth_within_two_seconds_both_ways() {
    let mut sim = Sim::new(1);
    let wide = |core: &mut Core| core.set_estimate(PeerId(2), 5_000_000);
    let narrow = |core: &mut Core| core.set_estimate(PeerId(2), 320_000);
    let up = sim.time_until_layer(2, 2, Duration::from_secs(6), wide);
    assert!(
        up.is_some_and(|t| t <= Duration::from_secs(2)),
        "up to the top layer: {up:?}"
    );
    let down = sim.time_until_layer(2, 0, Duration::from_secs(6), narrow);
    assert!(
        down.is_some_and(|t| t <= Duration::from_secs(2)),
        "down to the lowest layer: {down:?}"
    );
    let up_again = sim.time_until_layer(2, 2, Duration::from_secs(6), wide);
    assert!(
        up_again.is_some_and(|t| t <= Duration::from_secs(2)),
        "up again: {up_again:?}"
    );
    // A middle-sized line gets the middle layer.
    let middle = sim.time_until_layer(2, 1, Duration::from_secs(6), |core| {
        core.set_estimate(PeerId(2), 900_000)
    });
    assert!(
        middle.is_some_and(|t| t <= Duration::from_secs(2)),
        "the middle layer: {middle:?}"
    );
}

#[test]
fn switches_happen_only_at_keyframes_and_the_stream_stays_continuous() {
    let mut sim = Sim::new(1);
    // Bandwidth that swings every 1.5 s between the three layers.
    let estimates = [
        5_000_000u64,
        320_000,
        900_000,
        5_000_000,
        900_000,
        320_000,
        5_000_000,
    ];
    for estimate in estimates {
        sim.run(Duration::from_millis(1500), |sim| {
            sim.core.set_estimate(PeerId(2), estimate)
        });
    }
    let received = &sim.received[&PeerId(2)];
    let layers: Vec<usize> = received.iter().map(|r| r.layer).collect();
    let switches = layers.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        switches >= 5,
        "the layer moved with the bandwidth: {switches} switches"
    );
    assert!(
        received[0].keyframe_start,
        "the first packet starts a keyframe"
    );
    for pair in received.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        if before.layer != after.layer {
            assert!(
                after.keyframe_start,
                "a switch to layer {} at a keyframe",
                after.layer
            );
        }
        assert_eq!(
            after.rewrite.sequence_number,
            before.rewrite.sequence_number.wrapping_add(1),
            "sequence numbers continue without a gap"
        );
        let advance = after
            .rewrite
            .timestamp
            .wrapping_sub(before.rewrite.timestamp);
        assert!(
            advance < 90_000,
            "timestamps never go backwards: +{advance}"
        );
        let (a, b) = (
            before.rewrite.picture_id.unwrap(),
            after.rewrite.picture_id.unwrap(),
        );
        let step = b.wrapping_sub(a) & 0x7fff;
        assert!(step <= 1, "picture ids continue: {a} -> {b}");
        if step == 1 {
            assert!(advance > 0, "a new picture has a later timestamp");
        }
        let (a, b) = (
            before.rewrite.tl0_picture_index.unwrap(),
            after.rewrite.tl0_picture_index.unwrap(),
        );
        assert!(b.wrapping_sub(a) <= 1, "TL0PICIDX continues: {a} -> {b}");
        assert!(
            after.rewrite.ssrc == before.rewrite.ssrc,
            "one SSRC throughout"
        );
    }
    assert!(
        received
            .iter()
            .all(|r| r.rewrite.ssrc == sim.video_tracks[&PeerId(2)])
    );
}

#[test]
fn each_subscriber_gets_the_layer_for_its_line_and_its_tile() {
    let mut sim = Sim::new(3);
    sim.run(Duration::from_secs(3), |sim| {
        sim.core.set_estimate(PeerId(2), 5_000_000);
        sim.core.set_estimate(PeerId(3), 400_000);
        sim.core.set_estimate(PeerId(4), 5_000_000);
        sim.core.set_viewport(PeerId(4), "p1", 200);
    });
    assert_eq!(
        sim.layer_of(2),
        Some(2),
        "a wide line and no size said: the top layer"
    );
    assert_eq!(sim.layer_of(3), Some(0), "a thin line: the lowest");
    assert_eq!(
        sim.layer_of(4),
        Some(1),
        "a small tile: the layer that fills it"
    );
    sim.core.set_viewport(PeerId(4), "p1", 720);
    sim.run(Duration::from_secs(2), |_| {});
    assert_eq!(sim.layer_of(4), Some(2), "the tile grew");
}

#[test]
fn a_line_too_thin_for_video_keeps_its_audio_and_is_told() {
    let mut sim = Sim::new(1);
    sim.run(Duration::from_secs(2), |sim| {
        sim.core.set_estimate(PeerId(2), 5_000_000)
    });
    sim.run(Duration::from_secs(2), |sim| {
        sim.core.set_estimate(PeerId(2), 120_000)
    });
    let paused_at = sim.now;
    sim.run(Duration::from_secs(2), |sim| {
        sim.core.set_estimate(PeerId(2), 120_000)
    });
    assert!(
        sim.outputs.iter().any(|(_, o)| matches!(o, Output::Video { to: PeerId(2), stream_id, state: VideoState::PausedForBandwidth } if stream_id == "p1")),
        "the subscriber is told its video is paused"
    );
    assert!(
        sim.received[&PeerId(2)].iter().all(|r| r.at < paused_at),
        "no video while paused"
    );
    let audio = &sim.audio_received[&PeerId(2)];
    let gaps = audio.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        gaps <= Duration::from_millis(20),
        "audio never stopped: longest gap {gaps:?}"
    );
    // Bandwidth comes back: the video resumes once the pause has held for a while (a line that
    // cannot carry it is not tried every second), and the client is told.
    let back = sim.now;
    sim.run(
        publication::RESUME_BACKOFF + Duration::from_secs(1),
        |sim| sim.core.set_estimate(PeerId(2), 5_000_000),
    );
    let resumed = sim.received[&PeerId(2)]
        .iter()
        .find(|r| r.at > paused_at)
        .map(|r| r.at - back);
    assert!(
        resumed.is_some_and(|t| t <= publication::RESUME_BACKOFF + Duration::from_secs(1)),
        "resumed {resumed:?} after the line came back"
    );
    assert!(
        sim.received[&PeerId(2)]
            .last()
            .is_some_and(|r| r.at > paused_at)
    );
    assert!(sim.outputs.iter().any(|(_, o)| matches!(
        o,
        Output::Video {
            to: PeerId(2),
            state: VideoState::Playing,
            ..
        }
    )));
}

#[test]
fn layers_nobody_watches_are_stopped_at_the_publisher_and_started_again_when_needed() {
    let mut sim = Sim::new(1);
    // The only subscriber shows the video small: the top two layers are needed by nobody.
    sim.run(publication::PAUSE_AFTER + Duration::from_secs(1), |sim| {
        sim.core.set_estimate(PeerId(2), 5_000_000);
        sim.core.set_viewport(PeerId(2), "p1", 150);
    });
    let told: Vec<Vec<bool>> = sim
        .outputs
        .iter()
        .filter_map(|(_, o)| match o {
            Output::PublisherLayers {
                publisher: PeerId(1),
                source: Source::Camera,
                active,
            } => Some(active.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(told.last(), Some(&vec![true, false, false]), "{told:?}");
    let before = sim.received[&PeerId(2)].len();
    // Audio only: no video wanted at all.
    sim.core.set_audio_only(PeerId(2), true);
    sim.run(publication::PAUSE_AFTER + Duration::from_secs(1), |_| {});
    assert_eq!(
        sim.layers.iter().filter(|l| l.sending).count(),
        0,
        "nothing is encoded for nobody"
    );
    let during = sim.received[&PeerId(2)].len();
    // Video again, large: the top layer is asked for, arrives, and is forwarded.
    sim.core.set_audio_only(PeerId(2), false);
    sim.core.set_viewport(PeerId(2), "p1", 720);
    sim.run(Duration::from_secs(2), |_| {});
    assert!(sim.layers[2].sending);
    assert_eq!(sim.layer_of(2), Some(2));
    assert!(
        before > 0 && during - before < 30,
        "little video while audio only"
    );
}

#[test]
fn the_speaker_is_announced_within_a_second_and_last_n_sends_only_the_latest_speakers() {
    let mut core = Core::new(3);
    let start = Instant::now();
    for peer in 1..=4u64 {
        core.join(
            PeerId(peer),
            JoinRequest {
                room: "public/big".into(),
                participant_id: format!("p{peer}"),
                display_name: format!("P{peer}"),
                max_participants: 0,
                last_n: 1,
            },
        )
        .unwrap();
    }
    for peer in 1..=3u64 {
        for (track, ssrc, codec, source) in [
            (1, 10, Codec::Opus, Source::Microphone),
            (2, 11, Codec::Vp8, Source::Camera),
        ] {
            core.publish(
                start,
                PeerId(peer),
                PublishedLayer {
                    track,
                    ssrc: ssrc + peer as u32 * 100,
                    layer: 0,
                    layer_count: 1,
                    codec,
                    source,
                },
            );
        }
    }
    let mut ready = Vec::new();
    while let Some(output) = core.poll_output() {
        if let Output::AddDownTrack(track) = output {
            ready.push(track);
        }
    }
    for track in &ready {
        core.down_track_ready(start, track.subscriber, track.ssrc);
    }
    let mut out = Vec::new();
    let mut announced: Option<(Duration, String)> = None;
    let mut now = start;
    let speaker_starts = start + Duration::from_secs(1);
    while now < start + Duration::from_secs(3) {
        for peer in 1..=3u64 {
            // Everyone sends audio; 2 speaks from the first second on, the others are silent.
            let level = if peer == 2 && now >= speaker_starts {
                25
            } else {
                127
            };
            core.audio_level(now, PeerId(peer), level);
            let payload = [0x10, 0x00, 0x00, 0x00];
            core.forward(
                now,
                PeerId(peer),
                11 + peer as u32 * 100,
                1,
                0,
                &payload,
                &mut out,
            );
        }
        now += Duration::from_millis(20);
        while core.poll_timeout().is_some_and(|due| due <= now) {
            core.handle_timeout(now);
        }
        while let Some(output) = core.poll_output() {
            if let Output::DominantSpeaker {
                to: PeerId(4),
                participant_id,
            } = output
                && announced.is_none()
            {
                announced = Some((now - speaker_starts, participant_id));
            }
        }
    }
    let (after, who) = announced.expect("a speaker was announced");
    assert_eq!(who, "p2");
    assert!(
        after <= Duration::from_secs(1),
        "announced {after:?} after they began"
    );
    assert_eq!(core.dominant_speaker("public/big"), Some(PeerId(2)));
    // Subscriber 4 receives only the speaker's camera.
    let cameras: Vec<(u64, Option<usize>)> = ready
        .iter()
        .filter(|t| t.subscriber == PeerId(4) && t.kind == MediaKind::Video)
        .map(|t| {
            (
                t.publisher.0,
                core.down_track_layers(PeerId(4), t.ssrc).unwrap().1,
            )
        })
        .collect();
    for (publisher, target) in cameras {
        assert_eq!(
            target.is_some(),
            publisher == 2,
            "camera of {publisher}: {target:?}"
        );
    }
}

#[test]
fn a_shared_screen_goes_before_cameras_when_bandwidth_is_short() {
    let mut sim = Sim::new(1);
    // 2 shares a screen (one layer).
    sim.core.publish(
        sim.now,
        PeerId(2),
        PublishedLayer {
            track: 9,
            ssrc: 7777,
            layer: 0,
            layer_count: 1,
            codec: Codec::Vp8,
            source: Source::Screen,
        },
    );
    sim.collect();
    let screen_track = sim
        .outputs
        .iter()
        .find_map(|(_, o)| match o {
            Output::AddDownTrack(t) if t.subscriber == PeerId(1) && t.stream_id == "p2:screen" => {
                Some(t.clone())
            }
            _ => None,
        })
        .expect("1 receives 2's screen as its own stream");
    sim.core
        .down_track_ready(sim.now, PeerId(1), screen_track.ssrc);
    // 2 receives 1's camera; 1 receives the screen. 1's line carries the screen only.
    let mut sequence = 0u16;
    let mut screen_sent = 0;
    let end = sim.now + Duration::from_secs(3);
    while sim.now < end {
        sim.core.set_estimate(PeerId(1), 800_000);
        sequence = sequence.wrapping_add(1);
        let payload = vp8_payload(sequence & 0x7fff, 0, true, sequence % 30 == 1, 1080, 1000);
        let mut out = Vec::new();
        sim.core.forward(
            sim.now,
            PeerId(2),
            7777,
            sequence,
            u32::from(sequence) * 3000,
            &payload,
            &mut out,
        );
        screen_sent += out.len();
        sim.run(FRAME, |_| {});
    }
    assert!(screen_sent > 30, "the screen reaches 1: {screen_sent}");
    // A thin line at 2 with a screen share from 1 as well: the screen wins over the camera.
    sim.core.publish(
        sim.now,
        PeerId(1),
        PublishedLayer {
            track: 8,
            ssrc: 8888,
            layer: 0,
            layer_count: 1,
            codec: Codec::Vp8,
            source: Source::Screen,
        },
    );
    sim.collect();
    let track = sim
        .outputs
        .iter()
        .find_map(|(_, o)| match o {
            Output::AddDownTrack(t) if t.subscriber == PeerId(2) && t.stream_id == "p1:screen" => {
                Some(t.clone())
            }
            _ => None,
        })
        .unwrap();
    sim.core.down_track_ready(sim.now, PeerId(2), track.ssrc);
    let end = sim.now + Duration::from_secs(3);
    let mut screen_to_2 = 0;
    while sim.now < end {
        sim.core.set_estimate(PeerId(2), 700_000);
        sequence = sequence.wrapping_add(1);
        let payload = vp8_payload(sequence & 0x7fff, 0, true, sequence % 30 == 1, 1080, 1500);
        let mut out = Vec::new();
        sim.core.forward(
            sim.now,
            PeerId(1),
            8888,
            sequence,
            u32::from(sequence) * 3000,
            &payload,
            &mut out,
        );
        screen_to_2 += out.len();
        sim.run(FRAME, |_| {});
    }
    assert!(screen_to_2 > 30, "the screen reaches 2: {screen_to_2}");
    let camera = sim
        .core
        .down_track_layers(PeerId(2), sim.video_tracks[&PeerId(2)])
        .unwrap();
    assert_ne!(camera.1, Some(2), "the camera yields: {camera:?}");
}

#[test]
fn chat_reaches_the_others_and_bad_messages_are_refused() {
    let mut core = Core::new(1);
    join(&mut core, 1, "Anna");
    join(&mut core, 2, "Ben");
    join(&mut core, 3, "Cem");
    while core.poll_output().is_some() {}
    let now = Instant::now();
    core.chat(now, PeerId(1), "  Hallo zusammen!  ").unwrap();
    let delivered: Vec<Output> = std::iter::from_fn(|| core.poll_output()).collect();
    assert_eq!(delivered.len(), 2);
    for output in &delivered {
        let Output::Chat { to, message } = output else {
            panic!("{output:?}");
        };
        assert_ne!(*to, PeerId(1), "not echoed to the sender");
        assert_eq!(message.text, "Hallo zusammen!");
        assert_eq!(message.display_name, "Anna");
    }
    assert_eq!(core.chat(now, PeerId(1), "   "), Err(ChatError::Empty));
    assert_eq!(
        core.chat(now, PeerId(1), &"x".repeat(MAX_CHAT_CHARS + 1)),
        Err(ChatError::TooLong)
    );
    assert_eq!(core.chat(now, PeerId(9), "hi"), Err(ChatError::NotJoined));
    for _ in 0..CHAT_BURST {
        core.chat(now, PeerId(2), "spam").unwrap();
    }
    assert_eq!(core.chat(now, PeerId(2), "spam"), Err(ChatError::TooFast));
    assert!(core.chat(now + CHAT_WINDOW, PeerId(2), "later").is_ok());
}

#[test]
fn a_line_that_cannot_carry_video_is_tried_again_less_and_less_often() {
    let mut sim = Sim::new(1);
    let start = sim.now;
    // The estimate looks good for a moment every 2 s (as it does after a quiet spell) but falls
    // as soon as video flows again.
    sim.run(Duration::from_secs(60), |sim| {
        let phase = (sim.now - start).as_millis() % 2000;
        let estimate = if phase < 400 { 5_000_000 } else { 120_000 };
        sim.core.set_estimate(PeerId(2), estimate);
    });
    let tries: Vec<Duration> = sim
        .outputs
        .iter()
        .filter(|(_, o)| {
            matches!(
                o,
                Output::Video {
                    to: PeerId(2),
                    state: VideoState::Playing,
                    ..
                }
            )
        })
        .map(|(at, _)| *at - start)
        .collect();
    assert!(
        (2..=4).contains(&tries.len()),
        "tried again, but ever less often: {tries:?}"
    );
    for pair in tries.windows(2) {
        assert!(
            pair[1] - pair[0] >= publication::RESUME_BACKOFF,
            "{tries:?}"
        );
    }
}

#[test]
fn a_failed_move_up_is_tried_again_later_but_soon_enough() {
    let mut sim = Sim::new(1);
    let start = sim.now;
    // A line that carries the middle layer; the estimate overshoots for a moment every second
    // (as it does when it grows blindly), which a move to the top layer then proves wrong.
    sim.run(Duration::from_secs(40), |sim| {
        let phase = (sim.now - start).as_millis() % 1000;
        let estimate = if phase < 300 { 5_000_000 } else { 900_000 };
        sim.core.set_estimate(PeerId(2), estimate);
    });
    let received = &sim.received[&PeerId(2)];
    let rises: Vec<Duration> = received
        .windows(2)
        .filter(|w| w[1].layer > w[0].layer && w[1].layer == 2)
        .map(|w| w[1].at - start)
        .collect();
    assert!(
        (2..=16).contains(&rises.len()),
        "moves up to the top layer are spaced out, not tried every second: {rises:?}"
    );
    for pair in rises.windows(2).skip(1) {
        assert!(pair[1] - pair[0] >= publication::RISE_BACKOFF, "{rises:?}");
        assert!(
            pair[1] - pair[0] <= Duration::from_secs(12),
            "but tried again within 12 s: {rises:?}"
        );
    }
}

#[test]
fn a_new_subscriber_gets_its_video_as_soon_as_the_estimate_allows() {
    // Not yet enough for any video (a connection's estimate starts low and grows): nothing was
    // tried, so nothing failed, and the video must not be held back as if it had.
    let mut sim = Sim::with_estimate(1, Some(60_000));
    let start = sim.now;
    sim.run(Duration::from_secs(2), |_| {});
    // (The very first packets may pass before the first allocation, a tick after joining.)
    let low = start + Duration::from_secs(1);
    assert!(
        sim.received
            .get(&PeerId(2))
            .is_none_or(|r| r.iter().all(|packet| packet.at < low)),
        "no video while it cannot fit"
    );
    sim.run(Duration::from_secs(2), |sim| {
        sim.core.set_estimate(PeerId(2), 5_000_000);
    });
    let first = sim.received[&PeerId(2)]
        .iter()
        .find(|packet| packet.at >= low)
        .map(|packet| packet.at - start);
    assert!(
        first.is_some_and(|at| at <= Duration::from_millis(2800)),
        "video within 800 ms of the estimate growing: {first:?}"
    );
}

#[test]
fn a_resumed_video_first_shows_its_lowest_layer_holds_before_moving_up() {
    let mut sim = Sim::new(1);
    let start = sim.now;
    // Plays, then the line cannot carry it, then it clears for good.
    sim.run(Duration::from_secs(3), |sim| {
        sim.core.set_estimate(PeerId(2), 5_000_000)
    });
    sim.run(Duration::from_secs(2), |sim| {
        sim.core.set_estimate(PeerId(2), 100_000)
    });
    sim.run(Duration::from_secs(25), |sim| {
        sim.core.set_estimate(PeerId(2), 5_000_000)
    });
    let received = &sim.received[&PeerId(2)];
    let paused = start + Duration::from_secs(5);
    let resumed = received
        .iter()
        .find(|packet| packet.at > paused)
        .expect("it resumes")
        .at;
    assert_eq!(
        received
            .iter()
            .find(|packet| packet.at >= resumed)
            .map(|packet| packet.layer),
        Some(0),
        "on its lowest layer"
    );
    let first_up = received
        .iter()
        .find(|packet| packet.at >= resumed && packet.layer > 0)
        .map(|packet| packet.at - resumed);
    assert!(
        first_up.is_some_and(|after| after >= Duration::from_secs(5)
            && after <= Duration::from_secs(9)),
        "moves up only after the lowest layer held for a while, then soon: {first_up:?}"
    );
}

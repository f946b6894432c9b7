//! The room beyond layers: the dominant speaker and last-N, a shared screen's priority, chat.

use super::sim::*;
use super::*;

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
                moderator: false,
                lobby: false,
                first_moderates: false,
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

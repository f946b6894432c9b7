//! Simulcast layers chosen per subscriber, from its line and its tiles.

use super::sim::*;
use super::*;

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
    // A dip shorter than the grace (a failed move up drives the estimate down for a moment)
    // keeps the lowest layer playing.
    let dipped = sim.now;
    sim.run(publication::PAUSE_GRACE / 2, |sim| {
        sim.core.set_estimate(PeerId(2), 120_000)
    });
    sim.run(Duration::from_millis(500), |sim| {
        sim.core.set_estimate(PeerId(2), 300_000)
    });
    assert_eq!(
        sim.layer_of(2),
        Some(0),
        "a short dip: the lowest layer plays on"
    );
    assert!(
        !sim.outputs.iter().any(|(_, o)| matches!(
            o,
            Output::Video {
                state: VideoState::PausedForBandwidth,
                ..
            }
        )),
        "a short dip pauses nothing"
    );
    let last = sim.received[&PeerId(2)].last().map(|r| r.at);
    assert!(
        last.is_some_and(|at| at > dipped + publication::PAUSE_GRACE / 2),
        "video went on through the dip (last at {last:?})"
    );
    // A line that stays too thin pauses it once the grace is over.
    sim.run(
        publication::PAUSE_GRACE + Duration::from_millis(500),
        |sim| sim.core.set_estimate(PeerId(2), 120_000),
    );
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
    let low = publication::PAUSE_GRACE + Duration::from_secs(2);
    sim.run(low, |sim| sim.core.set_estimate(PeerId(2), 100_000));
    sim.run(Duration::from_secs(25), |sim| {
        sim.core.set_estimate(PeerId(2), 5_000_000)
    });
    let received = &sim.received[&PeerId(2)];
    let paused = start + Duration::from_secs(3) + low;
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

#[test]
fn a_camera_whose_connection_is_slow_to_come_up_is_seen_once_it_is_up() {
    // Anna's connection takes longer to come up than an unwatched layer runs before it is
    // stopped; her browser sends only the layers it has not been told to stop.
    let late = publication::PAUSE_AFTER + Duration::from_secs(2);
    let mut sim = Sim::with_slow_camera(1, late);
    sim.core.set_estimate(PeerId(2), 5_000_000);
    sim.run(late + Duration::from_secs(1), |_| {});
    assert!(
        sim.received.get(&PeerId(2)).is_some_and(|r| !r.is_empty()),
        "Ben receives Anna's video"
    );
    assert!(
        sim.layers.iter().all(|layer| layer.sending),
        "no layer was stopped before it arrived"
    );
}

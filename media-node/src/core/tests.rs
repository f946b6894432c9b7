//! The core driven on a virtual clock: no sockets, no sleeping.

use super::*;

mod moderation;
mod sim;
mod simulcast;
mod speakers;

/// A join of `p{peer}`, named `name`, into `room`: no limit, no role, no lobby.
pub(super) fn join_request(room: &str, peer: u64, name: &str) -> JoinRequest {
    JoinRequest {
        room: room.into(),
        participant_id: format!("p{peer}"),
        display_name: name.into(),
        max_participants: 0,
        last_n: 0,
        moderator: false,
        lobby: false,
        first_moderates: false,
    }
}

/// Lets `peer` into a room of at most three.
fn join(core: &mut Core, peer: u64, name: &str) {
    let request = JoinRequest {
        max_participants: 3,
        ..join_request("public/chor", peer, name)
    };
    core.join(PeerId(peer), request).map(|_| ()).unwrap();
}

/// A plain (single-layer) track whose key is its SSRC: a microphone or a camera.
pub(super) fn plain_layer(ssrc: u32, codec: Codec) -> PublishedLayer {
    let source = match codec.kind() {
        MediaKind::Audio => Source::Microphone,
        MediaKind::Video => Source::Camera,
    };
    PublishedLayer {
        track: u64::from(ssrc),
        ssrc,
        layer: 0,
        layer_count: 1,
        codec,
        source,
    }
}

/// Publishes a plain (single-layer) track whose key is its SSRC.
fn publish(core: &mut Core, peer: u64, ssrc: u32, codec: Codec) -> Option<PublicationId> {
    core.publish(Instant::now(), PeerId(peer), plain_layer(ssrc, codec))
}

fn drain(core: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn down_tracks(outputs: &[Output]) -> Vec<DownTrack> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::AddDownTrack(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn joining_welcomes_and_announces() {
    let mut core = Core::new(1);
    join(&mut core, 1, "Anna");
    join(&mut core, 2, "Ben");
    let outputs = drain(&mut core);
    assert!(outputs.contains(&Output::Roster {
        to: PeerId(2),
        event: RosterEvent::Welcome {
            participant_id: "p2".into(),
            others: vec![ParticipantInfo {
                participant_id: "p1".into(),
                display_name: "Anna".into(),
                audio_muted: false,
                video_muted: false,
                screen_sharing: false,
                moderator: false,
            }],
            moderator: false,
            locked: false,
            hands: Vec::new(),
        },
    }));
    assert!(outputs.iter().any(|o| matches!(o,
        Output::Roster { to: PeerId(1), event: RosterEvent::Joined(info) } if info.display_name == "Ben")));
}

#[test]
fn the_room_limit_holds() {
    let mut core = Core::new(1);
    for peer in 1..=3 {
        join(&mut core, peer, "x");
    }
    let late = JoinRequest {
        max_participants: 3,
        ..join_request("public/chor", 4, "late")
    };
    let refused = core.join(PeerId(4), late);
    assert_eq!(refused, Err(JoinError::RoomFull { limit: 3 }));
    assert_eq!(core.participant_count(), 3);
}

#[test]
fn everyone_receives_everyone_else_and_not_themselves() {
    let mut core = Core::new(1);
    join(&mut core, 1, "Anna");
    publish(&mut core, 1, 1111, Codec::Opus);
    join(&mut core, 2, "Ben");
    publish(&mut core, 2, 2222, Codec::Opus);
    let tracks = down_tracks(&drain(&mut core));
    let pairs: Vec<(u64, u64)> = tracks
        .iter()
        .map(|d| (d.publisher.0, d.subscriber.0))
        .collect();
    assert_eq!(pairs, vec![(1, 2), (2, 1)]);
    assert_eq!(
        tracks[0].stream_id, "p1",
        "the stream id names the publisher"
    );

    let now = Instant::now();
    for track in &tracks {
        core.down_track_ready(now, track.subscriber, track.ssrc);
    }
    let mut out = Vec::new();
    assert!(
        core.forward(now, PeerId(1), 1111, 5, 960, b"opus", &mut out)
            .is_some()
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, PeerId(2));
    assert_eq!(
        out[0].1.ssrc, tracks[0].ssrc,
        "rewritten to the down-track's SSRC"
    );
    assert!(
        core.forward(now, PeerId(1), 9999, 5, 960, b"opus", &mut out)
            .is_none(),
        "unknown SSRC"
    );
}

#[test]
fn nothing_flows_before_the_down_track_is_ready() {
    let mut core = Core::new(1);
    join(&mut core, 1, "Anna");
    join(&mut core, 2, "Ben");
    publish(&mut core, 1, 1111, Codec::Opus);
    let mut out = Vec::new();
    core.forward(Instant::now(), PeerId(1), 1111, 1, 0, b"opus", &mut out);
    assert!(out.is_empty());
}

#[test]
fn an_announced_track_is_set_up_anew_when_it_arrives_in_another_codec() {
    let mut core = Core::new(1);
    join(&mut core, 1, "Anna");
    join(&mut core, 2, "Ben");
    drain(&mut core);
    let now = Instant::now();
    let offered = OfferedTrack {
        track: 7,
        layer_count: 1,
        codec: Codec::Vp8,
        source: Source::Camera,
    };
    let announced = core.announce(now, PeerId(1), offered);
    assert_eq!(
        core.announce(now, PeerId(1), offered),
        announced,
        "once per track"
    );
    let first = down_tracks(&drain(&mut core));
    assert_eq!(first.len(), 1, "ben is subscribed before anything arrives");
    assert_eq!(first[0].codec, Codec::Vp8);
    core.down_track_ready(now, PeerId(2), first[0].ssrc);
    let arrived = PublishedLayer {
        track: 7,
        ssrc: 4242,
        layer: 0,
        layer_count: 1,
        codec: Codec::H264,
        source: Source::Camera,
    };
    core.publish(now, PeerId(1), arrived);
    let outputs = drain(&mut core);
    assert!(outputs.contains(&Output::RemoveDownTrack {
        subscriber: PeerId(2),
        ssrc: first[0].ssrc
    }));
    let second = down_tracks(&outputs);
    assert_eq!(second.len(), 1, "ben gets the track as it arrives");
    assert_eq!(second[0].codec, Codec::H264);
    assert_eq!(core.publication_count(), 1, "the announced one is gone");
}

#[test]
fn a_new_video_subscriber_asks_for_a_keyframe_and_waits_for_it() {
    let mut core = Core::new(1);
    join(&mut core, 1, "Anna");
    publish(&mut core, 1, 1111, Codec::Vp8);
    join(&mut core, 2, "Ben");
    let track = down_tracks(&drain(&mut core)).remove(0);
    let start = Instant::now();
    core.down_track_ready(start, PeerId(2), track.ssrc);
    assert_eq!(
        drain(&mut core),
        vec![Output::RequestKeyframe {
            publisher: PeerId(1),
            ssrc: 1111
        }]
    );
    let mut out = Vec::new();
    let inter = [0x10, 0x01];
    let key = [0x10, 0x00];
    core.forward(start, PeerId(1), 1111, 1, 0, &inter, &mut out);
    assert!(out.is_empty(), "an inter frame is not decodable yet");
    // No keyframe came within the retry time: ask again.
    let mut now = start;
    let mut asked_again = None;
    while now < start + KEYFRAME_RETRY + TICK * 2 && asked_again.is_none() {
        now = core.poll_timeout().expect("the core ticks");
        core.handle_timeout(now);
        if drain(&mut core)
            .iter()
            .any(|o| matches!(o, Output::RequestKeyframe { ssrc: 1111, .. }))
        {
            asked_again = Some(now);
        }
    }
    let asked_again = asked_again.expect("asked again");
    assert!(
        asked_again >= start + KEYFRAME_RETRY,
        "not before the retry time"
    );
    core.forward(now, PeerId(1), 1111, 2, 0, &key, &mut out);
    assert_eq!(out.len(), 1);
    core.forward(now, PeerId(1), 1111, 3, 0, &inter, &mut out);
    assert_eq!(out.len(), 1);
    core.handle_timeout(now + KEYFRAME_RETRY * 2);
    assert!(
        !drain(&mut core)
            .iter()
            .any(|o| matches!(o, Output::RequestKeyframe { .. })),
        "nothing left to wait for"
    );
}

#[test]
fn subscriber_keyframe_requests_are_rate_limited() {
    let mut core = Core::new(1);
    join(&mut core, 1, "Anna");
    publish(&mut core, 1, 1111, Codec::Vp8);
    join(&mut core, 2, "Ben");
    join(&mut core, 3, "Cem");
    let tracks = down_tracks(&drain(&mut core));
    let start = Instant::now();
    for (i, track) in tracks.iter().enumerate() {
        core.keyframe_requested(
            start + Duration::from_millis(i as u64 * 10),
            track.subscriber,
            track.ssrc,
        );
    }
    assert_eq!(
        drain(&mut core).len(),
        1,
        "two requests 10 ms apart become one"
    );
    core.handle_timeout(start + keyframe::MIN_INTERVAL);
    assert_eq!(
        drain(&mut core).len(),
        1,
        "the held one goes out after the interval"
    );
}

#[test]
fn leaving_frees_everything_of_the_leaver() {
    let mut core = Core::new(1);
    for peer in 1..=3 {
        join(&mut core, peer, "x");
        publish(&mut core, peer, peer as u32 * 10, Codec::Opus);
        publish(&mut core, peer, peer as u32 * 10 + 1, Codec::Vp8);
    }
    drain(&mut core);
    assert_eq!(core.down_track_count(), 12);
    core.leave(PeerId(2), LeaveReason::Left);
    let outputs = drain(&mut core);
    let removed: Vec<u64> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::RemoveDownTrack { subscriber, .. } => Some(subscriber.0),
            _ => None,
        })
        .collect();
    assert_eq!(removed.len(), 4, "2's two tracks at 1 and 3");
    assert!(!removed.contains(&2));
    let told: Vec<u64> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Roster {
                to,
                event:
                    RosterEvent::Left {
                        participant_id,
                        reason: LeaveReason::Left,
                    },
            } if participant_id == "p2" => Some(to.0),
            _ => None,
        })
        .collect();
    assert_eq!(told, vec![1, 3]);
    assert_eq!(
        core.down_track_count(),
        4,
        "1 and 3 still receive each other"
    );
    assert_eq!(core.publication_count(), 4);
    let mut out = Vec::new();
    assert!(
        core.forward(Instant::now(), PeerId(2), 20, 1, 0, b"x", &mut out)
            .is_none()
    );
    core.leave(PeerId(1), LeaveReason::ConnectionLost);
    core.leave(PeerId(3), LeaveReason::Left);
    assert_eq!(core.room_count(), 0);
    assert_eq!(core.down_track_count(), 0);
    assert_eq!(core.publication_count(), 0);
}

#[test]
fn republishing_the_same_ssrc_is_idempotent() {
    let mut core = Core::new(1);
    join(&mut core, 1, "Anna");
    join(&mut core, 2, "Ben");
    let first = publish(&mut core, 1, 1111, Codec::Opus);
    drain(&mut core);
    assert_eq!(publish(&mut core, 1, 1111, Codec::Opus), first);
    assert!(drain(&mut core).is_empty());
}

#[test]
fn probe_padding_goes_on_a_video_down_track_and_the_video_continues_after_it() {
    let mut core = Core::new(1);
    join(&mut core, 1, "Anna");
    publish(&mut core, 1, 1111, Codec::Vp8);
    publish(&mut core, 1, 2222, Codec::Opus);
    join(&mut core, 2, "Ben");
    let tracks = down_tracks(&drain(&mut core));
    let now = Instant::now();
    for track in &tracks {
        core.down_track_ready(now, PeerId(2), track.ssrc);
    }
    drain(&mut core);
    let video = tracks
        .iter()
        .find(|t| t.codec == Codec::Vp8)
        .expect("a video down-track")
        .ssrc;
    let mut out = Vec::new();
    core.forward(now, PeerId(1), 2222, 7, 960, b"opus", &mut out);
    // The node cannot send on the video (not negotiated yet), and audio is no place for it.
    assert_eq!(
        core.probe_padding(now, PeerId(2), 10, |ssrc| ssrc != video),
        None
    );
    // A video that never played is padded: its sequence starts with the padding.
    let (ssrc, padded, _) = core
        .probe_padding(now, PeerId(2), 10, |_| true)
        .expect("padding on the video that never played");
    assert_eq!(ssrc, video);
    out.clear();
    core.forward(now, PeerId(1), 1111, 100, 3000, &[0x10, 0x00], &mut out);
    let first = out[0].1;
    assert_eq!(
        first.sequence_number,
        padded.wrapping_add(10),
        "its first media follows the padding"
    );
    assert_eq!(
        core.probe_padding(now, PeerId(2), 10, |_| true),
        Some((
            video,
            first.sequence_number.wrapping_add(1),
            first.timestamp
        ))
    );
    out.clear();
    core.forward(now, PeerId(1), 1111, 101, 6000, &[0x10, 0x01], &mut out);
    assert_eq!(
        out[0].1.sequence_number,
        first.sequence_number.wrapping_add(11),
        "the video continues after the ten padding packets"
    );
    // The publisher is not asked for anything, and nobody else is told.
    assert!(drain(&mut core).is_empty());
}

/// Lets `peer` in with no room limit, and says whether its microphone and camera are off.
fn join_with(core: &mut Core, peer: u64, audio_muted: bool, video_muted: bool) {
    let request = join_request("public/chor", peer, &format!("name {peer}"));
    core.join(PeerId(peer), request).unwrap();
    core.set_media_state(PeerId(peer), audio_muted, video_muted, false);
}

/// Announces `peer`'s microphone (track 1) and camera (track 2), as its answered offer does.
fn announce_both(core: &mut Core, peer: u64) {
    for (track, codec, source) in [
        (1, Codec::Opus, Source::Microphone),
        (2, Codec::Vp8, Source::Camera),
    ] {
        let offered = OfferedTrack {
            track,
            layer_count: 1,
            codec,
            source,
        };
        core.announce(Instant::now(), PeerId(peer), offered);
    }
}

/// Whose tracks of which kind the down-tracks in `outputs` carry, counted.
fn carried(outputs: &[Output], publisher: u64, kind: MediaKind) -> usize {
    down_tracks(outputs)
        .iter()
        .filter(|d| d.publisher == PeerId(publisher) && d.kind == kind)
        .count()
}

#[test]
fn in_a_large_room_a_track_that_is_off_is_negotiated_once_it_is_switched_on() {
    let mut core = Core::new(1);
    let listeners = LARGE_ROOM as u64 + 1;
    for peer in 1..=listeners {
        join_with(&mut core, peer, true, true);
    }
    drain(&mut core);
    let speaker = 100;
    join_with(&mut core, speaker, true, true);
    announce_both(&mut core, speaker);
    let outputs = drain(&mut core);
    assert_eq!(
        carried(&outputs, speaker, MediaKind::Audio) + carried(&outputs, speaker, MediaKind::Video),
        0,
        "a silent microphone and a dark camera are negotiated with nobody"
    );

    // The microphone comes on: everyone gets it, and only it.
    core.set_media_state(PeerId(speaker), false, true, false);
    let outputs = drain(&mut core);
    assert_eq!(
        carried(&outputs, speaker, MediaKind::Audio),
        listeners as usize
    );
    assert_eq!(carried(&outputs, speaker, MediaKind::Video), 0);
    // Off again, it stays negotiated; a newcomer gets the microphone, not the camera.
    core.set_media_state(PeerId(speaker), true, true, false);
    join_with(&mut core, 200, true, true);
    let outputs = drain(&mut core);
    assert_eq!(carried(&outputs, speaker, MediaKind::Audio), 1);
    assert_eq!(carried(&outputs, speaker, MediaKind::Video), 0);
}

#[test]
fn in_a_small_room_every_track_is_negotiated_at_once() {
    let mut core = Core::new(1);
    join_with(&mut core, 1, false, false);
    join_with(&mut core, 2, true, true);
    announce_both(&mut core, 2);
    let outputs = drain(&mut core);
    assert_eq!(carried(&outputs, 2, MediaKind::Audio), 1);
    assert_eq!(carried(&outputs, 2, MediaKind::Video), 1);
}

//! Participants who move: their node is lost (node 1's link closes), their connection at their
//! node is lost, or their node drains; they come in again (as a page does that its gateway
//! places anew) and node 0's subscriber keeps its down-tracks and its tile of them.

use super::*;

const KEY: [u8; 2] = [0x10, 0x00];
const INTER: [u8; 2] = [0x10, 0x01];

/// `p2` publishes a camera (VP8) and a microphone on node 1, which `p1` on node 0 receives and
/// has decoded a keyframe and a frame of. Returns the pair, p2's copy on node 0, p1's
/// down-tracks (camera, microphone) and the last sequence number p1 got on the camera.
fn a_call_across() -> (Pair, PeerId, [u32; 2], u16) {
    let mut pair = Pair::new();
    pair.join(0, 1, false);
    pair.join(1, 2, false);
    for (ssrc, codec) in [(2000, Codec::Vp8), (2001, Codec::Opus)] {
        pair.nodes[1].publish(Instant::now(), PeerId(2), plain_layer(ssrc, codec));
    }
    pair.settle();
    let tracks = added(&pair.take(0), PeerId(1));
    let camera = tracks
        .iter()
        .find(|t| t.kind == MediaKind::Video)
        .expect("p1 is given p2's camera");
    let microphone = tracks
        .iter()
        .find(|t| t.kind == MediaKind::Audio)
        .expect("p1 is given p2's microphone");
    let (camera, microphone) = (camera.ssrc, microphone.ssrc);
    let now = Instant::now();
    for ssrc in [camera, microphone] {
        pair.nodes[0].down_track_ready(now, PeerId(1), ssrc);
    }
    let remote = pair.nodes[0]
        .participant_in(ROOM, "p2")
        .expect("node 0 knows p2");
    let mut out = Vec::new();
    let mut last = None;
    for (seq, payload) in [(100, KEY), (101, INTER)] {
        pair.nodes[0].forward(now, remote, 2000, seq, 3000, &payload, &mut out);
        last = out.first().map(|(_, rewrite)| rewrite.sequence_number);
    }
    let last = last.expect("p1 receives p2's camera");
    pair.take_now(0);
    (pair, remote, [camera, microphone], last)
}

fn added(outputs: &[Output], subscriber: PeerId) -> Vec<DownTrack> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::AddDownTrack(track) if track.subscriber == subscriber => Some(track.clone()),
            _ => None,
        })
        .collect()
}

fn removed(outputs: &[Output]) -> Vec<u32> {
    outputs
        .iter()
        .filter_map(|output| match output {
            Output::RemoveDownTrack { ssrc, .. } => Some(*ssrc),
            _ => None,
        })
        .collect()
}

/// Whether p1 was told that p2's connection broke off (`true`) or is back (`false`).
fn told_connection(outputs: &[Output], interrupted: bool) -> bool {
    outputs.iter().any(|output| {
        *output
            == Output::Roster {
                to: PeerId(1),
                event: RosterEvent::Connection {
                    participant_id: "p2".into(),
                    interrupted,
                },
            }
    })
}

fn told_left(outputs: &[Output]) -> bool {
    outputs.iter().any(|output| {
        matches!(output, Output::Roster { event: RosterEvent::Left { participant_id, .. }, .. }
            if participant_id == "p2")
    })
}

/// Ticks node 0 through `span` from `from`, and returns what it said.
fn run(pair: &mut Pair, from: Instant, span: Duration) -> Vec<Output> {
    let mut outputs = Vec::new();
    let mut now = from;
    while now < from + span {
        now += TICK;
        pair.nodes[0].handle_timeout(now);
        outputs.extend(pair.take_now(0));
    }
    outputs
}

#[test]
fn a_participant_whose_node_is_lost_comes_back_without_anyone_renegotiating() {
    let (mut pair, _, [camera, microphone], last) = a_call_across();
    let lost = Instant::now();
    pair.nodes[0].close_link(lost, LINK);
    let meanwhile = [
        pair.take_now(0),
        run(&mut pair, lost, Duration::from_secs(3)),
    ]
    .concat();
    assert!(
        removed(&meanwhile).is_empty() && !told_left(&meanwhile),
        "p1 keeps p2 and her down-tracks while she moves: {meanwhile:?}"
    );
    assert!(
        told_connection(&meanwhile, true),
        "p1 is told that her connection is interrupted"
    );

    // She comes in again here, with a camera only (her microphone is not allowed yet).
    pair.join(0, 2, false);
    let layer = plain_layer(5000, Codec::Vp8);
    let back = lost + Duration::from_secs(3);
    pair.nodes[0].publish(back, PeerId(2), layer);
    let outputs = pair.take(0);
    assert!(
        added(&outputs, PeerId(1)).is_empty() && removed(&outputs).is_empty(),
        "nobody renegotiates: {outputs:?}"
    );
    assert!(
        outputs.iter().any(|output| matches!(output,
            Output::Roster { to: PeerId(1), event: RosterEvent::Joined(info) } if info.participant_id == "p2")),
        "p1 is told that p2 is there (which updates what he shows of her)"
    );
    assert!(!told_left(&outputs));

    // Her new camera continues p1's old down-track from its first keyframe.
    let mut out = Vec::new();
    pair.nodes[0].forward(back, PeerId(2), 5000, 40_000, 9000, &INTER, &mut out);
    assert!(out.is_empty(), "nothing before her new keyframe");
    pair.nodes[0].forward(back, PeerId(2), 5000, 40_001, 9000, &KEY, &mut out);
    assert_eq!(out.len(), 1, "p1 gets her new keyframe");
    let (to, rewrite) = out[0];
    assert_eq!((to, rewrite.ssrc), (PeerId(1), camera));
    assert_eq!(
        rewrite.sequence_number,
        last.wrapping_add(1),
        "on the same down-track, its sequence continuing"
    );

    // The microphone that nothing took over goes after the grace; the camera stays.
    let later = run(&mut pair, back, MOVE_GRACE + Duration::from_secs(1));
    assert_eq!(removed(&later), vec![microphone]);
    assert!(!told_left(&later));
    assert_eq!(
        pair.nodes[0].down_track_count(),
        1,
        "p1's camera of p2's stays"
    );
}

#[test]
fn a_participant_whose_node_is_lost_and_who_does_not_come_back_leaves_after_the_grace() {
    let (mut pair, remote, [camera, microphone], _) = a_call_across();
    let lost = Instant::now();
    pair.nodes[0].close_link(lost, LINK);
    let mut out = Vec::new();
    pair.nodes[0].forward(lost, remote, 2000, 102, 6000, &INTER, &mut out);
    let within = run(&mut pair, lost, MOVE_GRACE - TICK * 2);
    assert!(!told_left(&within) && removed(&within).is_empty());
    // Nothing reaches her meanwhile: a keyframe request for her camera goes nowhere.
    pair.nodes[0].keyframe_requested(lost + TICK, PeerId(1), camera);
    assert!(pair.take_now(0).is_empty());

    let after = run(&mut pair, lost + MOVE_GRACE - TICK * 2, TICK * 4);
    assert!(told_left(&after), "p1 is told p2's connection is lost");
    let mut gone = removed(&after);
    gone.sort_unstable();
    let mut expected = vec![camera, microphone];
    expected.sort_unstable();
    assert_eq!(gone, expected);
    assert_eq!(pair.nodes[0].room_members(ROOM), &[PeerId(1)]);
}

#[test]
fn a_participant_back_over_its_own_link_is_there_as_it_was() {
    let (mut pair, remote, [camera, _], _) = a_call_across();
    let lost = Instant::now();
    for node in &mut pair.nodes {
        node.close_link(lost, LINK);
    }
    pair.take(0);
    for node in &mut pair.nodes {
        node.open_link(LINK, ROOM);
    }
    pair.settle();
    let outputs = [pair.take(0), run(&mut pair, lost, MOVE_GRACE * 2)].concat();
    assert!(told_connection(&outputs, false), "p1 is told she is back");
    assert!(
        removed(&outputs).is_empty()
            && !told_left(&outputs)
            && added(&outputs, PeerId(1)).is_empty(),
        "{outputs:?}"
    );
    // Her camera, silent for so long, plays again once it sends.
    let mut out = Vec::new();
    let now = lost + MOVE_GRACE * 2;
    pair.nodes[0].forward(now, remote, 2000, 103, 9000, &KEY, &mut out);
    run(&mut pair, now, TICK);
    pair.nodes[0].forward(now + TICK, remote, 2000, 104, 12_000, &KEY, &mut out);
    assert_eq!(out.first().map(|(_, rewrite)| rewrite.ssrc), Some(camera));
}

#[test]
fn a_participant_whose_connection_its_node_lost_comes_back_there_on_the_same_down_tracks() {
    let (mut pair, _, [camera, _], last) = a_call_across();
    pair.nodes[1].lose(Instant::now(), PeerId(2));
    pair.settle();
    let meanwhile = pair.take(0);
    assert!(
        removed(&meanwhile).is_empty() && !told_left(&meanwhile),
        "{meanwhile:?}"
    );

    // Her page connects to her node again, under a new connection there.
    pair.nodes[1]
        .join(PeerId(22), join_request(ROOM, 2, "name 2"))
        .expect("p2 may come in again");
    let layer = plain_layer(6000, Codec::Vp8);
    let now = Instant::now();
    pair.nodes[1].publish(now, PeerId(22), layer);
    pair.settle();
    let outputs = pair.take(0);
    assert!(
        added(&outputs, PeerId(1)).is_empty()
            && removed(&outputs).is_empty()
            && !told_left(&outputs),
        "{outputs:?}"
    );
    let again = pair.nodes[0]
        .participant_in(ROOM, "p2")
        .expect("node 0 knows p2");
    let mut out = Vec::new();
    pair.nodes[0].forward(now, again, 6000, 7, 100, &KEY, &mut out);
    assert_eq!(
        out.first()
            .map(|(_, rewrite)| (rewrite.ssrc, rewrite.sequence_number)),
        Some((camera, last.wrapping_add(1)))
    );
}

#[test]
fn a_participant_who_left_of_its_own_accord_is_gone_at_once() {
    let (mut pair, _, [camera, microphone], _) = a_call_across();
    pair.nodes[1].leave(PeerId(2), LeaveReason::Left);
    pair.settle();
    let outputs = pair.take(0);
    assert!(told_left(&outputs));
    let mut gone = removed(&outputs);
    gone.sort_unstable();
    let mut expected = vec![camera, microphone];
    expected.sort_unstable();
    assert_eq!(gone, expected);
}

#[test]
fn a_participant_whose_node_drains_is_in_the_room_once_on_every_node_and_never_shown_leaving() {
    let mut pair = Pair::new();
    pair.join(0, 1, false);
    pair.join(0, 2, false);
    pair.nodes[0].publish(Instant::now(), PeerId(2), plain_layer(2000, Codec::Vp8));
    pair.settle();
    let old = added(&pair.take(0), PeerId(1));
    assert_eq!(old.len(), 1);

    // Node 0 drains: p2's page is placed on node 1 and comes in there while its old connection
    // to node 0 is still up; then it closes that one.
    pair.nodes[1]
        .join(PeerId(22), join_request(ROOM, 2, "name 2"))
        .expect("p2 may come in again");
    pair.nodes[1].publish(Instant::now(), PeerId(22), plain_layer(7000, Codec::Vp8));
    pair.settle();
    let new = added(&pair.take(0), PeerId(1));
    assert_eq!(new.len(), 1, "p1 gets the new copy's camera as well");
    pair.nodes[0].lose(Instant::now(), PeerId(2));
    pair.settle();
    let outputs = pair.take(0);
    assert!(
        !told_left(&outputs),
        "p1 is not told that p2 left: {outputs:?}"
    );
    assert_eq!(
        removed(&outputs),
        vec![old[0].ssrc],
        "p1's down-track of the old copy goes"
    );
    for node in &pair.nodes {
        let copies = node
            .room_members(ROOM)
            .iter()
            .filter(|peer| node.participants[peer].info.participant_id == "p2")
            .count();
        assert_eq!(copies, 1, "p2 is in the room once");
    }
    let now = Instant::now();
    pair.nodes[0].down_track_ready(now, PeerId(1), new[0].ssrc);
    let again = pair.nodes[0]
        .participant_in(ROOM, "p2")
        .expect("node 0 knows p2");
    let mut out = Vec::new();
    pair.nodes[0].forward(now, again, 7000, 1, 0, &KEY, &mut out);
    assert_eq!(
        out.first().map(|(to, rewrite)| (*to, rewrite.ssrc)),
        Some((PeerId(1), new[0].ssrc)),
        "p1 receives p2's new camera"
    );
}

#[test]
fn a_participant_a_moderator_removes_while_its_connection_is_lost_is_gone_at_once_everywhere() {
    let mut pair = Pair::new();
    pair.join(0, 1, true);
    pair.join(0, 2, false);
    pair.nodes[0].publish(Instant::now(), PeerId(2), plain_layer(2000, Codec::Vp8));
    pair.nodes[0].lose(Instant::now(), PeerId(2));
    pair.settle();
    assert!(
        pair.nodes[1].participant_in(ROOM, "p2").is_some(),
        "adrift there too"
    );
    pair.take(0);

    pair.nodes[0]
        .moderate(PeerId(1), Action::Remove, "p2")
        .expect("p1 moderates, and p2 is in the room");
    pair.settle();
    assert!(told_left(&pair.take(0)), "the moderator sees p2 go");
    for node in &pair.nodes {
        assert!(node.participant_in(ROOM, "p2").is_none());
    }
}

#[test]
fn someone_who_comes_in_while_a_participant_is_adrift_is_told_so_after_the_welcome() {
    let (mut pair, _, _, _) = a_call_across();
    pair.nodes[0].close_link(Instant::now(), LINK);
    pair.take_now(0);
    pair.take(0);

    pair.join(0, 3, false);
    let outputs = pair.take(0);
    let to_p3: Vec<&RosterEvent> = outputs
        .iter()
        .filter_map(|output| match output {
            Output::Roster { to, event } if *to == PeerId(3) => Some(event),
            _ => None,
        })
        .collect();
    let welcome = to_p3
        .iter()
        .position(|event| matches!(event, RosterEvent::Welcome { others, .. } if others.iter().any(|o| o.participant_id == "p2")));
    let interrupted = RosterEvent::Connection {
        participant_id: "p2".into(),
        interrupted: true,
    };
    let notice = to_p3.iter().position(|event| **event == interrupted);
    assert!(
        welcome.is_some() && notice > welcome,
        "p3 sees p2 in the room, and that her connection is interrupted: {to_p3:?}"
    );
    assert!(
        pair.nodes[0]
            .adrift_notices(PeerId(1))
            .contains(&interrupted),
        "p1, should her own page come back, is told again"
    );
}

//! Two cores linked as the nodes of one room: what each tells the other, delivered at once.

use std::time::Duration;

use super::tests::{join_request, plain_layer};
use super::*;

const ROOM: &str = "public/chor";
const LINK: LinkId = LinkId(1);

/// Two nodes of a room; outputs for the link cross at once, the rest is kept per node.
struct Pair {
    nodes: [Core; 2],
    outputs: [Vec<Output>; 2],
}

impl Pair {
    fn new() -> Self {
        let mut nodes = [Core::new(1), Core::new(2)];
        for node in &mut nodes {
            node.open_link(LINK, ROOM);
        }
        Self {
            nodes,
            outputs: [Vec::new(), Vec::new()],
        }
    }

    fn join(&mut self, node: usize, peer: u64, moderator: bool) {
        self.join_as(node, peer, moderator, false);
    }

    /// `peer` knocks on the room's door at `node` and waits in its lobby.
    fn knock(&mut self, node: usize, peer: u64) {
        self.join_as(node, peer, false, true);
    }

    fn join_as(&mut self, node: usize, peer: u64, moderator: bool, lobby: bool) {
        let request = JoinRequest {
            moderator,
            lobby,
            ..join_request(ROOM, peer, &format!("name {peer}"))
        };
        self.nodes[node].join(PeerId(peer), request).unwrap();
        self.settle();
    }

    /// Carries every relay message across until both are quiet.
    fn settle(&mut self) {
        let now = Instant::now();
        loop {
            let mut quiet = true;
            for from in 0..2 {
                while let Some(output) = self.nodes[from].poll_output() {
                    match output {
                        Output::Relay { link, message } => {
                            quiet = false;
                            self.nodes[1 - from].relayed(now, link, message);
                        }
                        output => self.outputs[from].push(output),
                    }
                }
            }
            if quiet {
                return;
            }
        }
    }

    fn take(&mut self, node: usize) -> Vec<Output> {
        std::mem::take(&mut self.outputs[node])
    }

    /// What `node` has to say now, without carrying anything across.
    fn take_now(&mut self, node: usize) -> Vec<Output> {
        std::iter::from_fn(|| self.nodes[node].poll_output()).collect()
    }
}

#[test]
fn a_moderator_on_one_node_mutes_and_removes_a_participant_of_the_other() {
    let mut pair = Pair::new();
    pair.join(0, 1, true);
    pair.join(1, 2, false);
    pair.join(1, 3, false);
    pair.take(0);
    pair.take(1);
    pair.nodes[0]
        .moderate(PeerId(1), Action::Mute, "p2")
        .unwrap();
    pair.settle();
    let there = pair.take(1);
    assert!(there.contains(&Output::Request {
        to: PeerId(2),
        request: ModeratorRequest::Muted
    }));
    assert!(there.contains(&Output::Roster {
        to: PeerId(3),
        event: RosterEvent::Media {
            participant_id: "p2".into(),
            audio_muted: true,
            video_muted: false,
            screen_sharing: false,
        }
    }));
    // Its own node holds its microphone back from everyone.
    assert!(
        pair.nodes[1].participants[&PeerId(2)]
            .held
            .holds(Source::Microphone)
    );
    let here = pair.take(0);
    assert!(
        here.iter()
            .all(|output| output.addressee() != Some(PeerId(2))
                && !output.addressee().is_some_and(PeerId::is_remote)),
        "nothing is addressed to a participant of another node: {here:?}"
    );
    pair.nodes[0]
        .moderate(PeerId(1), Action::Remove, "p3")
        .unwrap();
    pair.settle();
    assert!(pair.take(1).contains(&Output::Close {
        peer: PeerId(3),
        reason: Ending::Removed
    }));
}

#[test]
fn the_lock_hands_and_roles_are_the_same_on_every_node() {
    let mut pair = Pair::new();
    pair.join(0, 1, true);
    pair.join(1, 2, false);
    pair.join(1, 3, false);
    // Each node counts its own participants as its load: the others are another node's.
    fn counts(core: &Core) -> (usize, Vec<(&str, usize)>) {
        (core.participant_count(), core.rooms().collect())
    }
    assert_eq!(counts(&pair.nodes[0]), (1, vec![(ROOM, 1)]));
    assert_eq!(counts(&pair.nodes[1]), (2, vec![(ROOM, 2)]));
    assert_eq!(
        pair.nodes[0].room_members(ROOM).len(),
        3,
        "but each knows the whole room"
    );
    pair.nodes[1].raise_hand(PeerId(2), true);
    pair.settle();
    assert!(pair.take(0).contains(&Output::Roster {
        to: PeerId(1),
        event: RosterEvent::Hands(vec!["p2".into()])
    }));
    pair.nodes[0]
        .moderate(PeerId(1), Action::LowerHand, "p2")
        .unwrap();
    pair.settle();
    assert!(pair.take(1).contains(&Output::Roster {
        to: PeerId(2),
        event: RosterEvent::Hands(vec![])
    }));
    pair.nodes[0].moderate(PeerId(1), Action::Lock, "").unwrap();
    pair.settle();
    assert!(pair.take(1).contains(&Output::Roster {
        to: PeerId(2),
        event: RosterEvent::Locked(true)
    }));
    let late = join_request(ROOM, 9, "late");
    assert_eq!(
        pair.nodes[1].join(PeerId(9), late),
        Err(JoinError::Locked),
        "a locked room is locked on every node"
    );
    pair.nodes[0]
        .moderate(PeerId(1), Action::MakeModerator, "p2")
        .unwrap();
    pair.settle();
    assert!(pair.nodes[1].participants[&PeerId(2)].info.moderator);
    assert!(
        pair.nodes[1]
            .moderate(PeerId(2), Action::Unlock, "")
            .is_ok(),
        "made a moderator on the other node, it moderates on its own"
    );
}

#[test]
fn when_the_last_moderator_leaves_one_participant_takes_over_on_every_node() {
    let mut pair = Pair::new();
    pair.join(0, 1, true);
    pair.join(1, 2, false);
    pair.join(0, 3, false);
    pair.nodes[0].leave(PeerId(1), LeaveReason::Left);
    pair.settle();
    let moderators = |core: &Core| -> Vec<String> {
        let mut ids: Vec<String> = core
            .participants
            .values()
            .filter(|p| p.info.moderator)
            .map(|p| p.info.participant_id.clone())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(moderators(&pair.nodes[0]), vec!["p2".to_owned()]);
    assert_eq!(moderators(&pair.nodes[1]), vec!["p2".to_owned()]);
}

#[test]
fn a_linked_node_gets_only_the_layers_its_subscribers_want() {
    let mut pair = Pair::new();
    pair.join(0, 1, false);
    pair.join(1, 2, false);
    let now = Instant::now();
    for layer in 0..3 {
        pair.nodes[0].publish(
            now,
            PeerId(1),
            PublishedLayer {
                track: 7,
                ssrc: 100 + layer as u32,
                layer,
                layer_count: 3,
                codec: Codec::Vp8,
                source: Source::Camera,
            },
        );
    }
    pair.settle();
    let remote = pair.nodes[1]
        .remote_peer(LINK, 1)
        .expect("anna is known there");
    assert_eq!(pair.nodes[1].participants[&remote].publications.len(), 1);
    // The other node's subscribers want the lowest layer only.
    pair.nodes[1].relayed(
        now,
        LINK,
        RelayMessage::Layers {
            peer: 1,
            source: Source::Camera,
            wanted: vec![true, false, false],
        },
    );
    let id = pair.nodes[0].participants[&PeerId(1)].publications[0];
    let mut wanted = vec![false; 3];
    pair.nodes[0].publications[&id].add_relay_wants(&mut wanted);
    assert_eq!(
        wanted,
        vec![true, true, true],
        "layers asked of node 1, not node 0"
    );
    pair.nodes[0].relayed(
        now,
        LINK,
        RelayMessage::Layers {
            peer: 1,
            source: Source::Camera,
            wanted: vec![true, false, false],
        },
    );
    let mut wanted = vec![false; 3];
    pair.nodes[0].publications[&id].add_relay_wants(&mut wanted);
    assert_eq!(wanted, vec![true, false, false]);
    // Nor does it relay what the other node does not want.
    let links = |ssrc| {
        pair.nodes[0]
            .relay_links(PeerId(1), ssrc)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (links(100), links(101), links(102)),
        (vec![LINK], vec![], vec![])
    );
    // A link cannot name a participant of another room or one of its own.
    pair.nodes[0].relayed(
        now,
        LINK,
        RelayMessage::Keyframe {
            peer: remote.0,
            ssrc: 100,
        },
    );
    pair.nodes[0].relayed(
        now,
        LinkId(99),
        RelayMessage::Keyframe { peer: 1, ssrc: 100 },
    );
    pair.settle();
    assert!(
        !pair
            .take(0)
            .iter()
            .any(|output| matches!(output, Output::RequestKeyframe { .. })),
        "no keyframe asked for a name the link does not own"
    );
}

#[test]
fn a_participant_who_moves_to_the_other_node_is_there_once() {
    let mut pair = Pair::new();
    pair.join(0, 1, false);
    pair.join(1, 2, false);
    // p2's node drains and its session moves to node 0, whose copy of p2 is still there
    // until node 1's word that p2 left comes.
    pair.nodes[0]
        .join(PeerId(7), join_request(ROOM, 2, "name 2"))
        .unwrap();
    pair.settle();
    let named = |core: &Core, id: &str| {
        core.room_members(ROOM)
            .iter()
            .filter(|peer| core.participants[peer].info.participant_id == id)
            .count()
    };
    assert_eq!(
        named(&pair.nodes[0], "p2"),
        1,
        "once on the node it moved to"
    );
    pair.nodes[1].leave(PeerId(2), LeaveReason::Left);
    pair.settle();
    assert_eq!(
        named(&pair.nodes[0], "p2"),
        1,
        "the old session's end takes nothing away"
    );
    assert_eq!(
        named(&pair.nodes[1], "p2"),
        1,
        "and node 1 knows the new one"
    );
}

/// What the moderator `to` was last told of who waits.
fn last_knocking(outputs: &[Output], to: PeerId) -> Option<Vec<(String, String)>> {
    outputs.iter().rev().find_map(|output| match output {
        Output::Knocking { to: at, waiting } if *at == to => Some(waiting.clone()),
        _ => None,
    })
}

fn waiting(ids: &[u64]) -> Vec<(String, String)> {
    ids.iter()
        .map(|id| (format!("p{id}"), format!("name {id}")))
        .collect()
}

#[test]
fn a_knock_on_one_node_is_answered_by_a_moderator_on_the_other() {
    let mut pair = Pair::new();
    pair.join(0, 1, true);
    pair.join(1, 2, false);
    pair.take(0);
    pair.take(1);

    pair.knock(1, 5);
    assert_eq!(
        last_knocking(&pair.take(0), PeerId(1)),
        Some(waiting(&[5])),
        "the moderator on node 0 sees who waits on node 1"
    );
    let there = pair.take(1);
    assert!(
        there.contains(&Output::Waiting {
            to: PeerId(5),
            moderator_present: true
        }),
        "who waits hears that a moderator is there: {there:?}"
    );
    assert!(
        last_knocking(&there, PeerId(2)).is_none(),
        "who does not moderate sees no knocks"
    );

    pair.nodes[0]
        .moderate(PeerId(1), Action::Admit, "p5")
        .unwrap();
    pair.settle();
    assert!(
        pair.nodes[1].room_members(ROOM).contains(&PeerId(5)),
        "p5 comes in at its own node"
    );
    assert!(pair.nodes[0].participant_in(ROOM, "p5").is_some());
    assert_eq!(last_knocking(&pair.take(0), PeerId(1)), Some(Vec::new()));

    pair.knock(1, 6);
    pair.nodes[0]
        .moderate(PeerId(1), Action::Deny, "p6")
        .unwrap();
    pair.settle();
    assert!(pair.take(1).contains(&Output::Close {
        peer: PeerId(6),
        reason: Ending::Denied
    }));
    assert_eq!(
        pair.nodes[0].moderate(PeerId(1), Action::Admit, "p6"),
        Err(ModerationError::NoSuchParticipant),
        "nobody waits under that id any more"
    );
}

#[test]
fn a_lobby_is_told_when_a_link_opens_and_forgotten_when_it_closes() {
    let mut pair = Pair::new();
    for node in &mut pair.nodes {
        node.close_link(Instant::now(), LINK);
    }
    pair.join(0, 1, true);
    pair.knock(1, 5);
    pair.knock(1, 6);
    assert_eq!(last_knocking(&pair.take(0), PeerId(1)), None);

    for node in &mut pair.nodes {
        node.open_link(LINK, ROOM);
    }
    pair.settle();
    assert_eq!(
        last_knocking(&pair.take(0), PeerId(1)),
        Some(waiting(&[5, 6]))
    );

    // The meeting ends: who waits on the other node is not let in.
    pair.nodes[0].moderate(PeerId(1), Action::End, "").unwrap();
    pair.settle();
    let there = pair.take(1);
    for peer in [5, 6] {
        assert!(
            there.contains(&Output::Close {
                peer: PeerId(peer),
                reason: Ending::Denied
            }),
            "p{peer} is sent away: {there:?}"
        );
    }

    pair.knock(1, 7);
    pair.take(0);
    pair.nodes[0].close_link(Instant::now(), LINK);
    assert_eq!(
        last_knocking(&pair.take_now(0), PeerId(1)),
        Some(Vec::new()),
        "a closed link's lobby is no longer shown"
    );
}

#[test]
fn a_room_that_empties_keeps_its_link_for_those_who_come_next() {
    let mut pair = Pair::new();
    pair.join(0, 1, false);
    pair.nodes[0].leave(PeerId(1), LeaveReason::Left);
    pair.settle();
    assert_eq!(pair.nodes[1].room_members(ROOM), &[] as &[PeerId]);

    pair.join(0, 3, false);
    pair.join(1, 2, false);
    assert!(pair.nodes[0].participant_in(ROOM, "p2").is_some());
    assert!(pair.nodes[1].participant_in(ROOM, "p3").is_some());
}

#[test]
fn a_dormant_track_of_the_other_node_is_negotiated_once_it_is_switched_on_there() {
    let mut pair = Pair::new();
    let listeners = LARGE_ROOM as u64 + 1;
    for peer in 1..=listeners {
        pair.join(0, peer, false);
    }
    pair.join(1, 100, false);
    pair.nodes[1].set_media_state(PeerId(100), true, true, false);
    let microphone = OfferedTrack {
        track: 1,
        layer_count: 1,
        codec: Codec::Opus,
        source: Source::Microphone,
    };
    pair.nodes[1].announce(Instant::now(), PeerId(100), microphone);
    pair.settle();
    let remote_audio = |outputs: &[Output]| {
        outputs
            .iter()
            .filter(|output| {
                matches!(output, Output::AddDownTrack(track)
                    if track.publisher.is_remote() && track.kind == MediaKind::Audio)
            })
            .count()
    };
    assert_eq!(
        remote_audio(&pair.take(0)),
        0,
        "a silent microphone crosses to nobody"
    );

    pair.nodes[1].set_media_state(PeerId(100), false, true, false);
    pair.settle();
    assert_eq!(
        remote_audio(&pair.take(0)),
        listeners as usize,
        "switched on there, it is negotiated with everyone here"
    );
}

mod moving;

#[test]
fn a_room_s_participants_on_the_other_node_come_together_when_the_link_opens() {
    let mut pair = Pair::new();
    for node in &mut pair.nodes {
        node.close_link(Instant::now(), LINK);
    }
    let many = MAX_PARTICIPANTS_TOGETHER as u64 + 50;
    for peer in 1..=many {
        pair.join(0, peer, false);
    }
    pair.join(1, 1000, false);
    pair.take(0);
    pair.take(1);

    for node in &mut pair.nodes {
        node.open_link(LINK, ROOM);
    }
    let now = Instant::now();
    let mut sizes = Vec::new();
    for output in pair.take_now(0) {
        if let Output::Relay { link, message } = output {
            if let RelayMessage::Participants(together) = &message {
                sizes.push(together.len());
            }
            pair.nodes[1].relayed(now, link, message);
        }
    }
    assert_eq!(
        sizes,
        [MAX_PARTICIPANTS_TOGETHER, 50],
        "the roster crosses in as few messages as their size allows"
    );
    pair.settle();
    let told: Vec<usize> = (pair.take(1).into_iter())
        .filter_map(|output| match output {
            Output::Roster {
                to: PeerId(1000),
                event: RosterEvent::JoinedTogether(infos),
            } => Some(infos.len()),
            Output::Roster {
                to: PeerId(1000),
                event: RosterEvent::Joined(_),
            } => Some(1),
            _ => None,
        })
        .collect();
    assert_eq!(
        told,
        [MAX_PARTICIPANTS_TOGETHER, 50],
        "p1000 hears of the other node's people in two messages, not one each"
    );
    assert_eq!(pair.nodes[1].room_members(ROOM).len(), many as usize + 1);
    // The one participant of node 1 is told of as any newcomer.
    let joined_there = (pair.take(0).iter())
        .filter(|output| {
            matches!(output, Output::Roster { event: RosterEvent::Joined(info), .. }
                if info.participant_id == "p1000")
        })
        .count();
    assert_eq!(joined_there, many as usize);
}

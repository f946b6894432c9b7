//! Moderators, the lobby and raised hands on a virtual clock.

use super::*;

fn request(peer: u64, moderator: bool, lobby: bool, first_moderates: bool) -> JoinRequest {
    JoinRequest {
        room: "verein/vorstand".into(),
        participant_id: format!("p{peer}"),
        display_name: format!("P{peer}"),
        max_participants: 10,
        last_n: 0,
        moderator,
        lobby,
        first_moderates,
    }
}

fn enter(core: &mut Core, peer: u64, moderator: bool) -> Joined {
    core.join(PeerId(peer), request(peer, moderator, true, false))
        .unwrap()
}

fn closes(outputs: &[Output]) -> Vec<(u64, Ending)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Close { peer, reason } => Some((peer.0, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_lobby_holds_people_until_a_moderator_lets_them_in_or_not() {
    let mut core = Core::new(1);
    assert_eq!(enter(&mut core, 2, false), Joined::Waiting);
    assert!(
        drain(&mut core).contains(&Output::Waiting {
            to: PeerId(2),
            moderator_present: false
        }),
        "the waiting screen says that no moderator is there"
    );
    assert_eq!(
        enter(&mut core, 1, true),
        Joined::In,
        "a moderator does not wait"
    );
    let outputs = drain(&mut core);
    assert!(outputs.contains(&Output::Knocking {
        to: PeerId(1),
        waiting: vec![("p2".into(), "P2".into())]
    }));
    assert!(outputs.contains(&Output::Waiting {
        to: PeerId(2),
        moderator_present: true
    }));
    assert_eq!(enter(&mut core, 3, false), Joined::Waiting);
    drain(&mut core);

    // Someone waiting cannot let anyone in; the moderator can.
    assert_eq!(
        core.moderate(PeerId(2), Action::Admit, "p3"),
        Err(ModerationError::NotModerator)
    );
    core.moderate(PeerId(1), Action::Admit, "p2").unwrap();
    let outputs = drain(&mut core);
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Roster {
            to: PeerId(2),
            event: RosterEvent::Welcome { .. }
        }
    )));
    assert_eq!(core.participant_count(), 2);
    assert!(!core.is_waiting(PeerId(2)));
    core.moderate(PeerId(1), Action::Deny, "p3").unwrap();
    assert_eq!(closes(&drain(&mut core)), vec![(3, Ending::Denied)]);
    assert_eq!(
        core.moderate(PeerId(1), Action::Admit, "p9"),
        Err(ModerationError::NoSuchParticipant)
    );
}

#[test]
fn the_first_in_moderates_and_the_role_passes_on_when_the_last_moderator_leaves() {
    let mut core = Core::new(1);
    for peer in 1..=3 {
        core.join(PeerId(peer), request(peer, false, false, true))
            .unwrap();
    }
    let outputs = drain(&mut core);
    let welcomed_as = |peer: u64| {
        outputs.iter().find_map(|o| match o {
            Output::Roster {
                to,
                event: RosterEvent::Welcome { moderator, .. },
            } if *to == PeerId(peer) => Some(*moderator),
            _ => None,
        })
    };
    assert_eq!(welcomed_as(1), Some(true), "the first in moderates");
    assert_eq!(welcomed_as(2), Some(false));
    core.leave(PeerId(1), LeaveReason::Left);
    assert!(
        drain(&mut core).contains(&Output::Roster {
            to: PeerId(3),
            event: RosterEvent::Moderator {
                participant_id: "p2".into()
            }
        }),
        "the one in longest moderates now, and everyone hears of it"
    );
    core.moderate(PeerId(2), Action::MakeModerator, "p3")
        .unwrap();
    core.leave(PeerId(2), LeaveReason::Left);
    core.moderate(PeerId(3), Action::Lock, "").unwrap();
}

#[test]
fn a_moderator_mutes_and_the_participant_alone_unmutes() {
    let mut core = Core::new(1);
    enter(&mut core, 1, true);
    enter(&mut core, 2, false);
    core.moderate(PeerId(1), Action::Admit, "p2").unwrap();
    publish(&mut core, 2, 2222, Codec::Opus);
    let now = Instant::now();
    for track in down_tracks(&drain(&mut core)) {
        core.down_track_ready(now, track.subscriber, track.ssrc);
    }
    let mut out = Vec::new();
    core.forward(now, PeerId(2), 2222, 1, 0, b"opus", &mut out);
    assert_eq!(out.len(), 1, "the moderator hears p2");

    // A participant cannot mute anyone.
    assert_eq!(
        core.moderate(PeerId(2), Action::Mute, "p1"),
        Err(ModerationError::NotModerator)
    );
    core.moderate(PeerId(1), Action::Mute, "p2").unwrap();
    let outputs = drain(&mut core);
    assert!(outputs.contains(&Output::Request {
        to: PeerId(2),
        request: ModeratorRequest::Muted
    }));
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Roster {
            to: PeerId(1),
            event: RosterEvent::Media {
                audio_muted: true,
                ..
            }
        }
    )));
    core.forward(now, PeerId(2), 2222, 2, 960, b"opus", &mut out);
    assert!(out.is_empty(), "a muted microphone reaches nobody");
    // Turning the camera on is not unmuting.
    core.set_media_state(PeerId(2), true, false, false);
    core.forward(now, PeerId(2), 2222, 3, 1920, b"opus", &mut out);
    assert!(out.is_empty());
    core.set_media_state(PeerId(2), false, false, false);
    core.forward(now, PeerId(2), 2222, 4, 2880, b"opus", &mut out);
    assert_eq!(out.len(), 1, "p2 unmuted themselves");
}

#[test]
fn hands_go_up_in_order_and_only_moderators_lower_others() {
    let mut core = Core::new(1);
    for peer in 1..=3 {
        core.join(PeerId(peer), request(peer, peer == 1, false, false))
            .unwrap();
    }
    core.raise_hand(PeerId(3), true);
    core.raise_hand(PeerId(2), true);
    let hands = |outputs: &[Output]| {
        outputs.iter().rev().find_map(|o| match o {
            Output::Roster {
                to: PeerId(1),
                event: RosterEvent::Hands(hands),
            } => Some(hands.clone()),
            _ => None,
        })
    };
    assert_eq!(
        hands(&drain(&mut core)),
        Some(vec!["p3".to_owned(), "p2".to_owned()])
    );
    assert_eq!(
        core.moderate(PeerId(2), Action::LowerHand, "p3"),
        Err(ModerationError::NotModerator)
    );
    core.moderate(PeerId(1), Action::LowerHand, "p3").unwrap();
    assert_eq!(hands(&drain(&mut core)), Some(vec!["p2".to_owned()]));
    core.raise_hand(PeerId(2), false);
    assert_eq!(hands(&drain(&mut core)), Some(Vec::new()));
}

#[test]
fn a_locked_room_lets_in_only_moderators_and_ending_closes_everyone() {
    let mut core = Core::new(1);
    core.join(PeerId(1), request(1, true, false, false))
        .unwrap();
    core.join(PeerId(2), request(2, false, false, false))
        .unwrap();
    core.moderate(PeerId(1), Action::Lock, "").unwrap();
    assert_eq!(
        core.join(PeerId(3), request(3, false, false, false)),
        Err(JoinError::Locked)
    );
    assert_eq!(
        core.join(PeerId(4), request(4, true, false, false)),
        Ok(Joined::In)
    );
    core.moderate(PeerId(1), Action::Unlock, "").unwrap();
    assert_eq!(enter(&mut core, 5, false), Joined::Waiting);
    core.moderate(PeerId(1), Action::Remove, "p2").unwrap();
    assert_eq!(closes(&drain(&mut core)), vec![(2, Ending::Removed)]);
    core.moderate(PeerId(4), Action::End, "").unwrap();
    let mut ended = closes(&drain(&mut core));
    ended.sort_by_key(|(peer, _)| *peer);
    assert_eq!(
        ended,
        vec![
            (1, Ending::Ended),
            (2, Ending::Ended),
            (4, Ending::Ended),
            (5, Ending::Ended)
        ],
        "everyone in the meeting and in its lobby (p2 is closed by the node, not the core)"
    );
}

//! The forms a message takes for a receiver of an earlier release: while a fleet is upgraded,
//! a replica or another node may not understand what this release sends
//! ([`treffpunkt_proto::features`]). The core speaks this release's forms; here they become
//! the older ones where the receiver did not name the newer. A message that keeps its form
//! passes through without a copy or an allocation.

use treffpunkt_proto::features::Features;
use treffpunkt_proto::v1::{self, signal::Kind};

use crate::core::RelayMessage;

/// `signal` for a session whose replica understands `features`: several newcomers at once
/// become one `participant_joined` each for a replica that does not carry
/// `participants_joined` (it would drop it, and the page would miss them).
pub(super) fn signal(signal: v1::Signal, features: Features) -> impl Iterator<Item = v1::Signal> {
    let (same, singles) = match signal.kind {
        Some(Kind::ParticipantsJoined(joined)) if !features.roster_batches => {
            (None, joined.participants)
        }
        kind => (Some(v1::Signal { kind }), Vec::new()),
    };
    let singles = singles
        .into_iter()
        .map(|participant| v1::Signal::new(Kind::ParticipantJoined(participant)));
    same.into_iter().chain(singles)
}

/// `message` for the other node of a link that understands `features`: a roster becomes one
/// `participant` each for a node that does not read `participants` (it would refuse it as
/// empty, and its participants would never see, nor get the media of, this node's).
pub(super) fn relay(
    message: RelayMessage,
    features: Features,
) -> impl Iterator<Item = RelayMessage> {
    let (same, singles) = match message {
        RelayMessage::Participants(together) if !features.roster_batches => (None, together),
        message => (Some(message), Vec::new()),
    };
    let singles = singles
        .into_iter()
        .map(|(peer, info)| RelayMessage::Participant { peer, info });
    same.into_iter().chain(singles)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::core::{LinkId, ParticipantInfo};

    /// A participant `id`, named in capitals, with nothing on.
    pub(in crate::control) fn info(id: &str) -> ParticipantInfo {
        ParticipantInfo {
            participant_id: id.into(),
            display_name: id.to_uppercase(),
            audio_muted: false,
            video_muted: false,
            screen_sharing: false,
            moderator: false,
        }
    }

    #[test]
    fn a_roster_reaches_a_node_of_an_earlier_release_one_participant_at_a_time() {
        let roster = RelayMessage::Participants(vec![(1, info("a")), (2, info("b"))]);
        let singles: Vec<RelayMessage> = relay(roster.clone(), Features::default()).collect();
        let wire: Vec<v1::RoomRelay> = singles
            .into_iter()
            .map(|message| super::super::relay::to_wire(LinkId(7), message))
            .collect();
        let peers: Vec<u64> = wire
            .iter()
            .map(|relay| match &relay.kind {
                Some(v1::room_relay::Kind::Participant(participant)) => participant.peer,
                other => panic!("one participant each, not {other:?}"),
            })
            .collect();
        assert_eq!(peers, [1, 2]);
        let batched: Vec<RelayMessage> = relay(roster, Features::ALL).collect();
        assert!(matches!(&batched[..], [RelayMessage::Participants(list)] if list.len() == 2));
        let hello = RelayMessage::Hello { nonce: [3; 16] };
        assert_eq!(relay(hello, Features::default()).count(), 1);
    }

    #[test]
    fn newcomers_reach_a_replica_of_an_earlier_release_one_at_a_time() {
        let person = |id: &str| v1::Participant {
            participant_id: id.into(),
            display_name: id.to_uppercase(),
            media: None,
            moderator: false,
        };
        let together = v1::Signal::new(Kind::ParticipantsJoined(v1::ParticipantsJoined {
            participants: vec![person("a"), person("b"), person("c")],
        }));
        let singles: Vec<v1::Signal> = signal(together.clone(), Features::default()).collect();
        let ids: Vec<&str> = singles
            .iter()
            .map(|signal| match &signal.kind {
                Some(Kind::ParticipantJoined(participant)) => participant.participant_id.as_str(),
                other => panic!("one participant-joined each, not {other:?}"),
            })
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(
            signal(together.clone(), Features::ALL).collect::<Vec<_>>(),
            [together]
        );
        let hands = v1::Signal::new(Kind::Hands(v1::Hands {
            participant_ids: vec!["a".into()],
        }));
        assert_eq!(
            signal(hands.clone(), Features::default()).collect::<Vec<_>>(),
            [hands]
        );
    }
}

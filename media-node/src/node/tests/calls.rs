//! Calls on the in-memory network: what participants of a real call see.

use std::time::Duration;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind::{Audio, Video};
use treffpunkt_proto::v1::{self, signal::Kind};

use super::peer::{Arrival, Publish};
use super::{Direction, Net, assert_complete_and_in_order, has_media, rtp_header};
use crate::node::{Command, Resume};

/// The layers of the last `count` video packets participant `index` received from `from`.
fn recent_layers(net: &Net, index: usize, from: &str, count: usize) -> Vec<u8> {
    let arrivals = net.peers[index].from(from, Video);
    let start = arrivals.len().saturating_sub(count);
    arrivals[start..].iter().map(|a| a.layer).collect()
}

fn viewport(net: &mut Net, index: usize, stream: &str, height: u32) {
    let viewports = v1::Viewports {
        viewports: vec![v1::Viewport {
            stream_id: stream.to_owned(),
            height,
        }],
    };
    net.signal(index, Kind::Viewports(viewports));
}

#[test]
fn participants_join_connect_and_learn_of_each_other() {
    let mut net = Net::new(10);
    let anna = net.join("anna", Publish::Plain);
    let ben = net.join("ben", Publish::Plain);
    let connected = net.run_until(Duration::from_secs(5), |net| {
        net.peers.iter().all(|peer| peer.connected)
    });
    assert!(connected, "both connections come up");
    let welcomed_alone = net.peers[anna].signals.iter().any(|signal| {
        matches!(signal, Kind::Welcome(w) if w.participant_id == "p-anna" && w.participants.is_empty())
    });
    assert!(welcomed_alone, "anna is welcomed into an empty room");
    let told_of_ben = net.peers[anna]
        .signals
        .iter()
        .any(|signal| matches!(signal, Kind::ParticipantJoined(p) if p.display_name == "ben"));
    assert!(told_of_ben, "anna learns that ben came");
    let welcomed_with_anna = net.peers[ben].signals.iter().any(|signal| {
        matches!(signal, Kind::Welcome(w) if w.participants.iter().any(|p| p.display_name == "anna"))
    });
    assert!(welcomed_with_anna, "ben's welcome names anna");
    assert_eq!(net.node.session_count(), 2);
}

#[test]
fn what_one_publishes_the_others_receive_intact_and_in_order() {
    let mut net = Net::new(10);
    let anna = net.join("anna", Publish::Plain);
    let ben = net.join("ben", Publish::Plain);
    let carla = net.join("carla", Publish::Nothing);
    let flowing = net.run_until(Duration::from_secs(6), |net| {
        has_media(net, ben, "p-anna", 100, 60)
            && has_media(net, carla, "p-anna", 100, 60)
            && has_media(net, carla, "p-ben", 100, 60)
            && has_media(net, anna, "p-ben", 100, 60)
    });
    assert!(
        flowing,
        "everyone receives both publishers' audio and video"
    );
    assert_complete_and_in_order(
        &net,
        &[(ben, "p-anna"), (carla, "p-anna"), (carla, "p-ben")],
    );
    assert!(
        net.peers[carla].from("p-carla", Audio).is_empty(),
        "nobody receives their own media"
    );
}

/// The node's offers participant `index` received so far.
fn offers(net: &Net, index: usize) -> Vec<String> {
    net.peers[index]
        .signals
        .iter()
        .filter_map(|signal| match signal {
            Kind::Offer(offer) => Some(offer.sdp.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_joiner_is_negotiated_with_the_others_once_and_before_its_media_flows() {
    let mut net = Net::new(10);
    let anna = net.join("anna", Publish::Plain);
    assert!(
        net.run_until(Duration::from_secs(5), |net| net.peers[anna].connected),
        "anna connects"
    );
    let before = offers(&net, anna).len();
    // The join's signalling is exchanged at once; none of ben's datagrams has reached the
    // node yet.
    let ben = net.join("ben", Publish::Simulcast);
    let asked = offers(&net, anna)[before..].to_vec();
    assert_eq!(
        asked.len(),
        1,
        "anna is asked once, before ben's connection is up"
    );
    for section in ["m=audio", "m=video", "p-ben"] {
        assert!(
            asked[0].contains(section),
            "the one offer names ben's microphone and camera: {section}"
        );
    }
    let flowing = net.run_until(Duration::from_secs(6), |net| {
        has_media(net, anna, "p-ben", 50, 30) && has_media(net, ben, "p-anna", 50, 30)
    });
    assert!(flowing, "both receive each other's audio and video");
    assert_eq!(
        offers(&net, anna).len(),
        before + 1,
        "ben's media arriving asks anna for nothing more"
    );
    let first = |kind| {
        net.peers[anna]
            .from("p-ben", kind)
            .first()
            .map(|arrival| arrival.index)
    };
    assert_eq!(
        first(Audio),
        Some(0),
        "anna hears ben from his first packet"
    );
    assert_eq!(first(Video), Some(0), "anna sees ben from his first frame");
    assert!(
        net.peers[anna].keyframe_requests >= 1,
        "ben, who came while anna's video ran, starts it from a keyframe asked of her"
    );
}

#[test]
fn a_join_is_offered_to_the_others_a_few_at_a_time_and_everyone_meets() {
    let mut net = Net::new(10);
    let names = ["anna", "ben", "carla", "dora", "emil", "fritz"];
    let mut joined = Vec::new();
    for (number, name) in names.iter().enumerate() {
        net.most_offers_in_one_call = 0;
        let made = net.node.offers_made();
        let before: Vec<usize> = joined
            .iter()
            .map(|&index| offers(&net, index).len())
            .collect();
        let joiner = net.join(name, Publish::Plain);
        let everyone_met = |net: &Net| {
            joined.iter().all(|&earlier| {
                has_media(net, earlier, &format!("p-{name}"), 5, 3)
                    && has_media(net, joiner, &format!("p-{}", names[earlier]), 5, 3)
            })
        };
        assert!(
            net.run_until(Duration::from_secs(6), everyone_met),
            "{name} and everyone before hear and see each other"
        );
        // Everyone already there is offered the joiner's tracks, and the joiner everyone's.
        assert!(
            net.node.offers_made() - made >= number as u64 + u64::from(number > 0),
            "{name}'s join makes an offer to each participant"
        );
        for (&earlier, before) in joined.iter().zip(before) {
            let asked = &offers(&net, earlier)[before..];
            assert!(
                asked
                    .iter()
                    .any(|offer| offer.contains(&format!("p-{name}"))),
                "{} is offered {name}'s tracks",
                names[earlier]
            );
        }
        assert!(
            net.most_offers_in_one_call <= crate::node::OFFERS_PER_TURN as u64,
            "no call of the node makes more than {} offers (the join of {name}: {})",
            crate::node::OFFERS_PER_TURN,
            net.most_offers_in_one_call
        );
        joined.push(joiner);
    }
}

#[test]
fn a_joiner_is_offered_the_others_tracks_before_they_are_offered_its() {
    let mut net = Net::new(10);
    let names = ["anna", "ben", "carla", "dora", "emil"];
    let earlier: Vec<usize> = names
        .iter()
        .map(|name| net.join(name, Publish::Plain))
        .collect();
    let everyone_met = |net: &Net| {
        earlier.iter().all(|&index| {
            names
                .iter()
                .filter(|name| **name != names[index])
                .all(|name| has_media(net, index, &format!("p-{name}"), 5, 3))
        })
    };
    assert!(
        net.run_until(Duration::from_secs(6), everyone_met),
        "the five meet"
    );
    let before = net.offered_to.len();
    let fritz = net.join("fritz", Publish::Plain);
    assert!(
        net.run_until(Duration::from_secs(1), |net| net.offered_to.len()
            >= before + 1 + names.len()),
        "fritz and the five are offered"
    );
    assert_eq!(
        net.offered_to[before],
        fritz,
        "the first offer after fritz's join is his, not the five's (offers went to {:?})",
        &net.offered_to[before..]
    );
    let offered = offers(&net, fritz);
    for name in names {
        assert!(
            offered[0].contains(&format!("p-{name}")),
            "fritz's first offer names {name}'s tracks"
        );
    }
    let met = net.run_until(Duration::from_secs(6), |net| {
        earlier.iter().all(|&index| {
            has_media(net, index, "p-fritz", 5, 3)
                && has_media(net, fritz, &format!("p-{}", names[index]), 5, 3)
        })
    });
    assert!(met, "fritz and the five hear and see each other");
}

#[test]
fn joins_in_a_burst_reach_those_already_there_in_one_renegotiation() {
    let mut net = Net::new(10);
    let names = ["anna", "ben", "carla", "dora", "emil", "fritz"];
    let (there, coming) = names.split_at(3);
    let earlier: Vec<usize> = there
        .iter()
        .map(|name| net.join(name, Publish::Plain))
        .collect();
    let met = |net: &Net, from: &[usize], of: &[&str]| {
        from.iter().all(|&index| {
            of.iter()
                .filter(|name| **name != names[index])
                .all(|name| has_media(net, index, &format!("p-{name}"), 5, 3))
        })
    };
    assert!(
        net.run_until(Duration::from_secs(6), |net| met(net, &earlier, there)),
        "the first three meet"
    );
    let before: Vec<usize> = earlier
        .iter()
        .map(|&index| offers(&net, index).len())
        .collect();
    // Three join within the same millisecond, as the load generator's four at a time do.
    let joiners: Vec<usize> = coming
        .iter()
        .map(|name| net.join(name, Publish::Plain))
        .collect();
    let everyone: Vec<usize> = earlier.iter().chain(&joiners).copied().collect();
    assert!(
        net.run_until(Duration::from_secs(6), |net| met(net, &everyone, &names)),
        "all six hear and see each other"
    );
    for (&index, before) in earlier.iter().zip(before) {
        let asked = &offers(&net, index)[before..];
        assert_eq!(
            asked.len(),
            1,
            "{} is renegotiated once for the three joins",
            names[index]
        );
        for name in coming {
            assert!(
                asked[0].contains(&format!("p-{name}")),
                "the one offer to {} names {name}",
                names[index]
            );
        }
    }
}

#[test]
fn a_subscriber_gets_the_simulcast_layer_for_the_size_it_shows() {
    let mut net = Net::new(10);
    net.join("anna", Publish::Simulcast);
    let ben = net.join("ben", Publish::Nothing);
    viewport(&mut net, ben, "p-anna", 180);
    let small = net.run_until(Duration::from_secs(6), |net| {
        let layers = recent_layers(net, ben, "p-anna", 30);
        layers.len() == 30 && layers.iter().all(|layer| *layer == 0)
    });
    assert!(small, "a small tile gets the lowest layer");
    viewport(&mut net, ben, "p-anna", 720);
    let large = net.run_until(Duration::from_secs(10), |net| {
        recent_layers(net, ben, "p-anna", 10) == [2; 10]
    });
    assert!(
        large,
        "a large tile moves up to the highest layer: {:?}",
        recent_layers(&net, ben, "p-anna", 40)
    );
    viewport(&mut net, ben, "p-anna", 180);
    let down = net.run_until(Duration::from_secs(3), |net| {
        recent_layers(net, ben, "p-anna", 10) == [0; 10]
    });
    assert!(down, "a smaller tile goes back down");
    let arrivals = net.peers[ben].from("p-anna", Video);
    assert!(
        arrivals.windows(2).all(|pair| pair[0].at <= pair[1].at),
        "one continuous stream across the switches"
    );
}

#[test]
fn lost_packets_are_asked_for_again_and_arrive() {
    let mut net = Net::new(10);
    let anna = net.join("anna", Publish::Plain);
    let ben = net.join("ben", Publish::Nothing);
    assert!(net.run_until(Duration::from_secs(6), |net| has_media(
        net, ben, "p-anna", 0, 30
    )));
    let anna_address = net.peers[anna].address;
    let ben_address = net.peers[ben].address;
    let video_ssrc = net.peers[anna].video_ssrcs()[0];
    // One video packet lost on anna's uplink, then one on ben's downlink; what each line carried
    // under the index (SSRC and sequence number) of its lost packet afterwards is noted.
    let (mut up_lost, mut down_lost) = (None, None);
    let again = std::rc::Rc::new(std::cell::Cell::new((0u32, 0u32)));
    let noted = again.clone();
    net.lose(move |direction, peer, bytes| {
        let Some(index) = rtp_header(bytes) else {
            return false;
        };
        let up = match direction {
            Direction::Up if peer == anna_address && index.0 == video_ssrc => true,
            Direction::Down if peer == ben_address && bytes.len() > 180 && up_lost.is_some() => {
                false
            }
            _ => return false,
        };
        let lost = if up { &mut up_lost } else { &mut down_lost };
        match lost {
            None => {
                *lost = Some(index);
                true
            }
            Some(lost) => {
                if *lost == index {
                    let (up_again, down_again) = noted.get();
                    noted.set((up_again + u32::from(up), down_again + u32::from(!up)));
                }
                false
            }
        }
    });
    let before = net.peers[ben].from("p-anna", Video).len();
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.lost, 2, "one packet lost each way");
    let mut indices: Vec<u32> = net.peers[ben].from("p-anna", Video)[before..]
        .iter()
        .map(|a: &Arrival| a.index)
        .collect();
    let in_order = indices.windows(2).all(|pair| pair[1] == pair[0] + 1);
    assert!(
        !in_order,
        "the repaired packets came late, out of order: {indices:?}"
    );
    indices.sort_unstable();
    assert!(
        indices.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "every packet arrived in the end: {indices:?}"
    );
    // Ben took RTX, so the node's repair went on the repair stream; Anna was answered no RTX,
    // so hers came under the lost packet's own index.
    let (up_again, down_again) = again.get();
    assert!(
        up_again >= 1,
        "Anna sent her lost packet again under its index"
    );
    assert_eq!(down_again, 0, "the node's repair went on Ben's RTX stream");
}

/// Anna and Ben in a call, until Ben's page vanishes from the network and the node notices.
/// Returns the net and Anna.
fn ben_vanishes() -> (Net, usize) {
    let mut net = Net::new(10);
    let anna = net.join("anna", Publish::Plain);
    let ben = net.join("ben", Publish::Plain);
    assert!(net.run_until(Duration::from_secs(6), |net| has_media(
        net, anna, "p-ben", 10, 10
    )));
    net.peers[ben].vanish();
    let closed = net.run_until(Duration::from_secs(60), |net| !net.closed.is_empty());
    assert!(closed, "the node notices within a minute");
    (net, anna)
}

#[test]
fn a_participant_who_vanishes_is_closed_and_the_others_are_told() {
    let (mut net, anna) = ben_vanishes();
    assert_eq!(
        net.closed,
        vec![("session-ben".to_owned(), v1::CloseReason::ConnectionLost)]
    );
    let told = |net: &Net| {
        net.peers[anna].signals.iter().any(
            |signal| matches!(signal, Kind::ParticipantLeft(left) if left.participant_id == "p-ben"),
        )
    };
    // His page may be on its way back: anna is told once it had time for that.
    assert!(!told(&net), "not at once");
    net.run_for(crate::core::MOVE_GRACE + Duration::from_secs(1));
    assert!(told(&net), "anna learns that ben is gone");
    assert_eq!(net.node.session_count(), 1);
    assert_eq!(
        net.node.routing_entries().0,
        1,
        "ben's routing is forgotten"
    );
    let before = net.peers[anna].from("p-ben", Audio).len();
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.peers[anna].from("p-ben", Audio).len(), before);
}

#[test]
fn a_participant_whose_connection_failed_comes_back_on_the_others_down_tracks() {
    let (mut net, anna) = ben_vanishes();
    let offers = |net: &Net| {
        let signals = &net.peers[anna].signals;
        signals
            .iter()
            .filter(|signal| matches!(signal, Kind::Offer(_)))
            .count()
    };
    let offered = offers(&net);
    // His page comes back (the gateway placed it again, here): the same participant.
    let _again = net.join_as("ben-again", "p-ben", Publish::Plain);
    let before = net.peers[anna].from("p-ben", Video).len();
    let back = net.run_until(Duration::from_secs(6), |net| {
        net.peers[anna].from("p-ben", Video).len() >= before + 30
    });
    assert!(back, "anna receives ben again");
    net.run_for(crate::core::MOVE_GRACE);
    assert_eq!(
        offers(&net),
        offered,
        "anna's connection was not renegotiated"
    );
    let told_left = net.peers[anna].signals.iter().any(
        |signal| matches!(signal, Kind::ParticipantLeft(left) if left.participant_id == "p-ben"),
    );
    assert!(!told_left, "for anna, ben never left");
}

#[test]
fn a_participant_who_joins_again_ends_the_older_session() {
    let mut net = Net::new(10);
    let first = net.join("anna", Publish::Plain);
    let ben = net.join("ben", Publish::Plain);
    let flowing = net.run_until(Duration::from_secs(6), |net| {
        has_media(net, ben, "p-anna", 10, 10)
    });
    assert!(flowing, "Ben receives Anna's first session");
    // Anna again, in another tab or with a replayed ticket: the same participant id.
    let second = net.join_as("anna-again", "p-anna", Publish::Plain);
    let before = net.peers[ben].from("p-anna", Video).len();
    let replaced = net.run_until(Duration::from_secs(6), |net| {
        net.peers[ben].from("p-anna", Video).len() >= before + 30
    });
    assert!(replaced, "Ben receives Anna's second session");
    assert_eq!(
        net.closed,
        vec![(
            net.peers[first].session_id.clone(),
            v1::CloseReason::Replaced
        )],
        "only the older session ended"
    );
    assert_eq!(net.node.session_count(), 2, "Anna once and Ben");
    assert!(net.peers[second].connected);
}

fn resume(net: &mut Net, session_id: &str, node_instance: &str, generation: u64) {
    let resume = Command::Resume(Resume {
        session_id: session_id.to_owned(),
        node_instance: node_instance.to_owned(),
        generation,
        request_id: 7,
        via: "replica".to_owned(),
    });
    let now = net.now;
    net.node.command(now, resume);
    net.run_for(Duration::from_millis(10));
}

#[test]
fn each_ticket_resumes_once_and_a_stale_one_leaves_the_session_alone() {
    let mut net = Net::new(10);
    let anna = net.join("anna", Publish::Plain);
    let connected = net.run_until(Duration::from_secs(5), |net| net.peers[anna].connected);
    assert!(connected, "Anna is connected");
    let session_id = net.peers[anna].session_id.clone();
    let instance = net.node.instance().to_owned();
    for generation in [0, 0, 1, 0] {
        resume(&mut net, &session_id, &instance, generation);
    }
    let outcomes: Vec<(v1::ResumeOutcome, u64)> =
        net.answers.iter().map(|(_, o, g)| (*o, *g)).collect();
    assert_eq!(
        outcomes,
        vec![
            (v1::ResumeOutcome::Resumed, 1),
            (v1::ResumeOutcome::Stale, 0),
            (v1::ResumeOutcome::Resumed, 2),
            (v1::ResumeOutcome::Stale, 0),
        ],
        "the first ticket of each generation resumes; a used one is stale"
    );
    assert!(net.closed.is_empty(), "nothing ended");
    assert_eq!(net.node.session_count(), 1);
}

#[test]
fn a_session_this_node_ended_is_not_resumed_but_one_an_earlier_node_lost_moves() {
    let mut net = Net::new(10);
    let anna = net.join("anna", Publish::Plain);
    let connected = net.run_until(Duration::from_secs(5), |net| net.peers[anna].connected);
    assert!(connected, "Anna is connected");
    let session_id = net.peers[anna].session_id.clone();
    let now = net.now;
    net.node.command(
        now,
        Command::Close {
            session_id: session_id.clone(),
        },
    );
    net.run_for(Duration::from_millis(10));
    let instance = net.node.instance().to_owned();
    resume(&mut net, &session_id, &instance, 0);
    resume(&mut net, &session_id, "an earlier process", 0);
    let outcomes: Vec<v1::ResumeOutcome> = net.answers.iter().map(|(_, o, _)| *o).collect();
    assert_eq!(
        outcomes,
        vec![v1::ResumeOutcome::Ended, v1::ResumeOutcome::Lost],
        "this node's own ended session is refused; a lost one is for the control plane to move"
    );
}

#[test]
fn a_session_resumed_before_its_media_connected_is_closed_for_a_fresh_start() {
    let mut net = Net::new(10);
    // Nothing gets through: Anna's media never connects (the replica that carried her offer
    // or the node's answer went down).
    net.lose(|_, _, _| true);
    let anna = net.join("anna", Publish::Plain);
    net.run_for(Duration::from_secs(1));
    assert!(!net.peers[anna].connected);
    let session_id = net.peers[anna].session_id.clone();
    let instance = net.node.instance().to_owned();
    resume(&mut net, &session_id, &instance, 0);
    let outcomes: Vec<v1::ResumeOutcome> = net.answers.iter().map(|(_, o, _)| *o).collect();
    assert_eq!(
        outcomes,
        vec![v1::ResumeOutcome::Lost],
        "the control plane opens a new session for it"
    );
    assert_eq!(net.node.session_count(), 0, "the half-made session is gone");
    assert!(
        net.closed.is_empty(),
        "no close is reported: the control plane moves the session on the answer"
    );
    // A connected session resumes as before.
    let mut net = Net::new(10);
    let ben = net.join("ben", Publish::Plain);
    let connected = net.run_until(Duration::from_secs(5), |net| net.peers[ben].connected);
    assert!(connected, "Ben is connected");
    let session_id = net.peers[ben].session_id.clone();
    let instance = net.node.instance().to_owned();
    resume(&mut net, &session_id, &instance, 0);
    assert_eq!(net.answers[0].1, v1::ResumeOutcome::Resumed);
}

#[test]
fn a_lost_session_is_continued_once() {
    let mut net = Net::new(10);
    let first = net.join_continuing("anna", "p-anna", "lost-session", Publish::Plain);
    let connected = net.run_until(Duration::from_secs(5), |net| net.peers[first].connected);
    assert!(connected, "Anna's session continues the lost one");
    let replay = net.join_continuing("mallory", "p-anna", "lost-session", Publish::Plain);
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.closed,
        vec![(
            net.peers[replay].session_id.clone(),
            v1::CloseReason::Refused
        )],
        "the replayed ticket opens nothing and Anna's session stays"
    );
    assert_eq!(net.node.session_count(), 1);
    assert!(net.peers[first].connected);
}

#[test]
fn closing_a_room_ends_the_sessions_in_it_and_in_its_lobby() {
    let mut net = Net::new(10);
    let anna = net.join("anna", Publish::Plain);
    let ben = net.knock("ben");
    net.run_for(Duration::from_secs(1));
    let waits = net.peers[ben]
        .signals
        .iter()
        .any(|signal| matches!(signal, Kind::Lobby(_)));
    assert!(waits, "ben waits in the lobby");
    let now = net.now;
    net.node.command(
        now,
        Command::CloseRoom {
            room: super::ROOM.to_owned(),
        },
    );
    net.run_for(Duration::from_millis(100));
    for (name, index) in [("anna", anna), ("ben", ben)] {
        let session = &net.peers[index].session_id;
        let closed = net
            .closed
            .iter()
            .any(|(id, reason)| id == session && *reason == v1::CloseReason::RoomClosed);
        assert!(closed, "{name}'s session is closed with the room");
    }
    assert_eq!(net.node.session_count(), 0, "nobody is left on the node");
}

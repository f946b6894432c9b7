//! Rooms across nodes on the in-memory network: two real nodes linked as the control plane
//! links them, with the room messages going through the control plane's wire form and the
//! media through sealed datagrams between the nodes.

use std::time::Duration;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind::{Audio, Video};
use treffpunkt_proto::v1::{self, signal::Kind};

use super::peer::Publish;
use super::{Direction, Net, assert_complete_and_in_order, has_media};
use crate::core::LinkId;

fn told(net: &Net, index: usize, what: impl Fn(&Kind) -> bool) -> bool {
    net.peers[index].signals.iter().any(what)
}

/// Two nodes linked for the room.
fn two_nodes() -> Net {
    let mut net = Net::new(10);
    let second = net.add_node(10);
    net.link(LinkId(1), 0, second);
    net
}

#[test]
fn participants_on_two_nodes_see_hear_and_write_to_each_other() {
    let mut net = two_nodes();
    let anna = net.join_on(0, "anna", Publish::Plain);
    let ben = net.join_on(1, "ben", Publish::Plain);
    let carla = net.join_on(1, "carla", Publish::Nothing);
    let flowing = net.run_until(Duration::from_secs(8), |net| {
        has_media(net, ben, "p-anna", 100, 60)
            && has_media(net, carla, "p-anna", 100, 60)
            && has_media(net, carla, "p-ben", 100, 60)
            && has_media(net, anna, "p-ben", 100, 60)
    });
    assert!(
        flowing,
        "everyone receives the others' audio and video across the nodes"
    );
    assert_complete_and_in_order(&net, &[(ben, "p-anna"), (carla, "p-anna"), (anna, "p-ben")]);
    assert!(
        told(
            &net,
            anna,
            |signal| matches!(signal, Kind::ParticipantJoined(p) if p.display_name == "carla")
        ),
        "anna learns that carla came in on the other node"
    );
    assert!(
        told(&net, carla, |signal| matches!(signal, Kind::Welcome(w)
            if w.participants.iter().any(|p| p.display_name == "anna")
                && w.participants.iter().any(|p| p.display_name == "ben"))),
        "carla's welcome names both, wherever they are"
    );

    // Chat crosses the link, once.
    net.signal(
        carla,
        Kind::Chat(v1::ChatMessage {
            text: "Guten Abend".into(),
            ..Default::default()
        }),
    );
    net.run_for(Duration::from_millis(100));
    let chats = |index: usize| {
        net.peers[index]
            .signals
            .iter()
            .filter(|signal| matches!(signal, Kind::Chat(c) if c.text == "Guten Abend" && c.participant_id == "p-carla"))
            .count()
    };
    assert_eq!((chats(anna), chats(ben), chats(carla)), (1, 1, 0));

    // A microphone switched off on one node is shown on the other.
    net.signal(
        ben,
        Kind::MediaState(v1::MediaState {
            audio_muted: true,
            ..Default::default()
        }),
    );
    net.run_for(Duration::from_millis(100));
    assert!(told(
        &net,
        anna,
        |signal| matches!(signal, Kind::MediaState(m)
        if m.participant_id == "p-ben" && m.audio_muted)
    ));
}

#[test]
fn each_publication_crosses_the_link_once_however_many_receive_it_there() {
    let mut net = two_nodes();
    net.join_on(0, "anna", Publish::Plain);
    let watchers: Vec<usize> = ["ben", "carla", "dora"]
        .iter()
        .map(|name| net.join_on(1, name, Publish::Nothing))
        .collect();
    let flowing = net.run_until(Duration::from_secs(8), |net| {
        watchers
            .iter()
            .all(|index| has_media(net, *index, "p-anna", 150, 100))
    });
    assert!(flowing, "every watcher on the other node gets anna's media");
    net.run_for(Duration::from_secs(1));
    let (sent, _) = net.node.relayed_packets();
    let (_, taken) = net.node_mut(1).relayed_packets();
    let received = |index: usize| {
        net.peers[index].from("p-anna", Audio).len() + net.peers[index].from("p-anna", Video).len()
    };
    let most = watchers
        .iter()
        .map(|index| received(*index))
        .max()
        .unwrap_or(0) as u64;
    assert_eq!(sent, taken, "the link lost nothing and nothing came twice");
    assert!(
        sent >= most && sent <= most + 60,
        "{sent} packets relayed for three watchers who got {most} each: once per packet, \
         not once per watcher"
    );
}

#[test]
fn a_late_joiner_on_the_other_node_starts_from_a_keyframe_it_asked_for() {
    let mut net = two_nodes();
    let anna = net.join_on(0, "anna", Publish::Plain);
    let ben = net.join_on(0, "ben", Publish::Nothing);
    assert!(net.run_until(Duration::from_secs(6), |net| has_media(
        net, ben, "p-anna", 0, 60
    )));
    // Long after anna's first keyframe.
    net.run_for(Duration::from_secs(3));
    let asked_before = net.peers[anna].keyframe_requests;
    let carla = net.join_on(1, "carla", Publish::Nothing);
    let sees = net.run_until(Duration::from_secs(4), |net| {
        has_media(net, carla, "p-anna", 0, 30)
    });
    assert!(sees, "carla, on the other node, sees anna");
    assert!(
        net.peers[anna].keyframe_requests > asked_before,
        "carla's node asked anna's for a keyframe, which asked anna"
    );
}

#[test]
fn a_closed_link_takes_the_other_nodes_participants_out_of_the_room_unless_they_come_back() {
    let mut net = two_nodes();
    let anna = net.join_on(0, "anna", Publish::Plain);
    let ben = net.join_on(1, "ben", Publish::Plain);
    assert!(net.run_until(Duration::from_secs(6), |net| {
        has_media(net, anna, "p-ben", 50, 0)
    }));
    let now = net.now;
    net.node
        .command(now, crate::node::Command::CloseLink { link: LinkId(1) });
    net.run_for(Duration::from_millis(100));
    let ben_left = |net: &Net| {
        told(
            net,
            anna,
            |signal| matches!(signal, Kind::ParticipantLeft(p) if p.participant_id == "p-ben"),
        )
    };
    let heard = net.peers[anna].from("p-ben", Audio).len();
    net.run_for(Duration::from_secs(1));
    assert!(
        net.peers[anna].from("p-ben", Audio).len() <= heard + 5,
        "nothing of ben's reaches anna after the link closed"
    );
    // Ben may be on his way to another node: anna keeps him for a while.
    assert!(!ben_left(&net), "anna is not told at once");
    net.run_for(crate::core::MOVE_GRACE);
    assert!(ben_left(&net), "ben did not come back: anna is told");
    let _ = ben;
}

#[test]
fn a_forged_or_replayed_relay_datagram_reaches_nobody() {
    let mut net = two_nodes();
    let _anna = net.join_on(0, "anna", Publish::Plain);
    let ben = net.join_on(1, "ben", Publish::Nothing);
    let relayed = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let record = relayed.clone();
    net.lose(move |direction, _, bytes| {
        if direction == Direction::Between {
            record.borrow_mut().push(bytes.to_vec());
        }
        false
    });
    assert!(net.run_until(Duration::from_secs(6), |net| has_media(
        net, ben, "p-anna", 50, 30
    )));
    let before = net.peers[ben].from("p-anna", Audio).len();
    let (dropped_before, _) = net.node_mut(1).dropped_datagrams();
    let (address, now) = (net.node_address_of(0), net.now);
    let old = relayed.borrow().last().cloned().expect("datagrams crossed");
    let mut forged = old.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    let mut garbage = vec![crate::node::relay::RELAY_MARKER];
    garbage.extend_from_slice(&1u64.to_be_bytes());
    garbage.extend_from_slice(&[0x42; 80]);
    for datagram in [&old, &forged, &garbage, &old[..5].to_vec()] {
        net.node_mut(1).datagram(now, now, address, datagram);
    }
    // The right bytes from a stranger's address.
    let stranger = std::net::SocketAddr::from(([10, 9, 9, 9], 10_000));
    net.node_mut(1).datagram(now, now, stranger, &old);
    let (dropped, _) = net.node_mut(1).dropped_datagrams();
    assert_eq!(
        dropped,
        dropped_before + 5,
        "replayed, forged, garbled, short and misaddressed: all dropped"
    );
    net.run_for(Duration::from_millis(300));
    assert!(
        net.peers[ben].from("p-anna", Audio).len() > before + 5,
        "the call goes on"
    );
}

#[test]
fn a_link_closed_and_opened_again_with_the_same_key_carries_the_call_again() {
    let mut net = two_nodes();
    let anna = net.join_on(0, "anna", Publish::Plain);
    let ben = net.join_on(1, "ben", Publish::Plain);
    assert!(net.run_until(Duration::from_secs(6), |net| {
        has_media(net, anna, "p-ben", 50, 30) && has_media(net, ben, "p-anna", 50, 30)
    }));
    let now = net.now;
    for node in [0, 1] {
        net.node_mut(node)
            .command(now, crate::node::Command::CloseLink { link: LinkId(1) });
    }
    net.run_for(Duration::from_millis(200));
    let heard = net.peers[ben].from("p-anna", Audio).len();
    // The control plane opens it again (same nodes, so the same id and key).
    net.link(LinkId(1), 0, 1);
    let again = net.run_until(Duration::from_secs(6), |net| {
        net.peers[ben].from("p-anna", Audio).len() > heard + 50
    });
    assert!(again, "ben hears anna again");
    assert!(
        !told(&net, ben, |signal| {
            matches!(signal, Kind::ParticipantLeft(p) if p.participant_id == "p-anna")
        }),
        "for ben, anna never left: she was back before her link's grace ended"
    );
    let (dropped, _) = net.node_mut(1).dropped_datagrams();
    assert!(
        dropped < 20,
        "hardly anything of the new opening was dropped: {dropped}"
    );
}

#[test]
fn what_the_link_loses_is_sent_again_and_arrives_once() {
    let mut net = two_nodes();
    let to_second = net.node_address_of(1);
    let anna = net.join_on(0, "anna", Publish::Plain);
    let ben = net.join_on(1, "ben", Publish::Nothing);
    assert!(net.run_until(Duration::from_secs(6), |net| has_media(
        net, ben, "p-anna", 20, 20
    )));
    // From now on the link towards ben's node loses one datagram in 10.
    let mut count = 0u32;
    net.lose(move |direction, to, bytes| {
        let relayed = direction == Direction::Between && to == to_second && bytes[0] == 0x0c;
        count += u32::from(relayed);
        relayed && count.is_multiple_of(10)
    });
    net.run_for(Duration::from_secs(4));
    net.lose(|_, _, _| false);
    net.run_for(Duration::from_millis(500));
    assert!(net.lost > 20, "the link lost {} datagrams", net.lost);
    let lost = net.lost;
    for kind in [Audio, Video] {
        let mut indices: Vec<u32> = net.peers[ben]
            .from("p-anna", kind)
            .iter()
            .map(|arrived| arrived.index)
            .collect();
        let arrived = indices.len();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), arrived, "no {kind} packet reaches ben twice");
        assert!(
            indices.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "every {kind} packet of anna's reaches ben: {indices:?}"
        );
    }
    let status = net.node.link_status();
    assert!(
        status[0].packets_resent >= u64::from(lost),
        "anna's node sent what was lost again ({lost} lost): {status:?}"
    );
    let _ = anna;
}

//! The Attach client's pure parts: grants, the links between sessions and replicas.

use super::links::{CLOSED_HELD_FOR, HELD_PER_SESSION, Links, RoomLink};
use super::*;
use std::time::{Duration, Instant};

fn open(grant: v1::Grant, key: &Keyring) -> v1::OpenSession {
    v1::OpenSession {
        session_id: "s1".into(),
        grant: Some(key.sign_grant(&grant)),
        continues: String::new(),
    }
}

fn grant() -> v1::Grant {
    v1::Grant {
        room: Some(v1::RoomRef {
            tenant: "public".into(),
            name: "chor".into(),
        }),
        participant_id: "p1".into(),
        display_name: "Anna".into(),
        can_publish: true,
        can_subscribe: true,
        max_participants: 10,
        expires_at_unix_ms: now_unix_ms() + 60_000,
        video_last_n: 0,
        node_id: "node-a".into(),
        ..Default::default()
    }
}

#[test]
fn only_signed_unexpired_grants_for_this_node_admit() {
    let key = Keyring::from_secret(b"a shared secret of enough length!");
    let admission = admit(open(grant(), &key), &key, "node-a").unwrap();
    assert_eq!(admission.room, "public/chor");
    let other = Keyring::from_secret(b"some other secret of enough length");
    assert!(admit(open(grant(), &other), &key, "node-a").is_err());
    assert!(
        admit(open(grant(), &key), &key, "node-b").is_err(),
        "a grant for another node"
    );
    let expired = v1::Grant {
        expires_at_unix_ms: 1,
        ..grant()
    };
    assert!(admit(open(expired, &key), &key, "node-a").is_err());
    let roomless = v1::Grant {
        room: None,
        ..grant()
    };
    assert!(admit(open(roomless, &key), &key, "node-a").is_err());
    let unsigned = v1::OpenSession {
        session_id: "s1".into(),
        grant: None,
        continues: String::new(),
    };
    assert!(admit(unsigned, &key, "node-a").is_err());
}

fn signal(session: &str) -> v1::NodeMessage {
    event_message(Event::Signal {
        session_id: session.to_owned(),
        signal: v1::Signal::error("x", "y"),
    })
}

#[test]
fn signals_go_to_their_replica_or_wait_for_it() {
    let mut links = Links::default();
    let (a, mut a_rx) = mpsc::channel(8);
    links.up.insert("a".into(), a);
    links.bind("s1", "a", Some("public/chor".into()));
    links.bind("s2", "b", Some("public/chor".into()));
    links.route("s1", signal("s1"));
    links.route("s2", signal("s2"));
    assert!(a_rx.try_recv().is_ok(), "s1's replica is up");
    assert!(a_rx.try_recv().is_err(), "s2's is not: held");
    let (b, mut b_rx) = mpsc::channel(8);
    links.up.insert("b".into(), b);
    links.flush("b");
    assert!(
        b_rx.try_recv().is_ok(),
        "held signals go out when b is back"
    );
    // A client resuming through replica a moves its session there.
    links.bind("s2", "a", None);
    links.route("s2", signal("s2"));
    assert!(a_rx.try_recv().is_ok());
    assert_eq!(links.hosted_rooms()[0].session_ids.len(), 2);
    // What a stream that comes back cannot take at once stays held, in order.
    links.bind("s3", "c", None);
    for id in ["s3", "s3", "s3"] {
        links.route(id, signal(id));
    }
    let (c, mut c_rx) = mpsc::channel(1);
    links.up.insert("c".into(), c);
    links.flush("c");
    assert_eq!(signals_in(&mut c_rx), ["s3"]);
    assert_eq!(links.held["s3"].len(), 2, "kept, not dropped");
    links.retry_held(Instant::now());
    links.retry_held(Instant::now());
    assert_eq!(signals_in(&mut c_rx), ["s3"]);
}

#[test]
fn replicas_without_a_stream_are_missing_until_one_is_up() {
    let mut links = Links::default();
    let (a, _a_rx) = mpsc::channel(8);
    links.up.insert("a".into(), a);
    links
        .replicas
        .insert("a".into(), vec!["a".into(), "b".into()]);
    assert_eq!(links.missing(), 1, "b serves and has no stream");
    // What a stream that is gone told no longer counts.
    links.replicas.insert("gone".into(), vec!["c".into()]);
    assert_eq!(links.missing(), 1);
    let (b, _b_rx) = mpsc::channel(8);
    links.up.insert("b".into(), b);
    links
        .replicas
        .insert("b".into(), vec!["a".into(), "b".into()]);
    assert_eq!(links.missing(), 0);
}

#[test]
fn what_a_full_stream_cannot_take_goes_out_later_in_order() {
    let mut links = Links::default();
    let (a, mut a_rx) = mpsc::channel(2);
    links.up.insert("a".into(), a);
    links.bind("s1", "a", None);
    links.bind("s2", "a", None);
    let welcome = |session: &str| {
        event_message(Event::Signal {
            session_id: session.to_owned(),
            signal: v1::Signal::error("welcome", session),
        })
    };
    links.route("s1", signal("s1"));
    links.route("s1", signal("s1"));
    assert!(
        links.held.is_empty(),
        "a stream with room takes them at once"
    );
    // The stream is full: s2's welcome waits, and its next message waits behind it.
    links.route("s2", welcome("s2"));
    links.route("s2", signal("s2"));
    assert_eq!(links.held["s2"].len(), 2);
    assert_eq!(session_signals(&mut a_rx).len(), 2);
    links.retry_held(Instant::now());
    let later = session_signals(&mut a_rx);
    assert_eq!(later.len(), 2, "both went out once the stream had room");
    assert_eq!(later[0], welcome_signal("s2"), "the welcome first");
    assert!(links.held.is_empty());
}

fn welcome_signal(session: &str) -> v1::SessionSignal {
    v1::SessionSignal {
        session_id: session.to_owned(),
        signal: Some(v1::Signal::error("welcome", session)),
    }
}

/// The signals `rx` has, in order.
fn session_signals(rx: &mut mpsc::Receiver<v1::NodeMessage>) -> Vec<v1::SessionSignal> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|message| match message.kind {
            Some(NodeKind::Signal(signal)) => Some(signal),
            _ => None,
        })
        .collect()
}

/// The session ids of the signals `rx` has, in order.
fn signals_in(rx: &mut mpsc::Receiver<v1::NodeMessage>) -> Vec<String> {
    session_signals(rx)
        .into_iter()
        .map(|signal| signal.session_id)
        .collect()
}

fn closed(session: &str) -> v1::NodeMessage {
    event_message(Event::Closed {
        session_id: session.to_owned(),
        reason: v1::CloseReason::Left,
        detail: String::new(),
    })
}

#[test]
fn that_a_session_ended_reaches_its_replica_even_through_a_full_stream() {
    let mut links = Links::default();
    let (a, mut a_rx) = mpsc::channel(1);
    links.up.insert("a".into(), a);
    links.bind("s1", "a", Some("public/chor".into()));
    links.route("s1", signal("s1"));
    let t0 = Instant::now();
    links.close("s1", closed("s1"), t0);
    assert!(
        links.hosted_rooms().is_empty(),
        "an ended session is hosted no more"
    );
    assert_eq!(signals_in(&mut a_rx), ["s1"]);
    links.retry_held(t0 + Duration::from_secs(1));
    let last = a_rx
        .try_recv()
        .expect("the end went out once there was room");
    assert!(matches!(last.kind, Some(NodeKind::SessionClosed(ref c)) if c.session_id == "s1"));
    assert!(
        links.sessions.is_empty() && links.held.is_empty(),
        "then the session is forgotten"
    );
    // With room, an ended session is forgotten at once.
    links.bind("s2", "a", None);
    links.close("s2", closed("s2"), t0);
    assert!(a_rx.try_recv().is_ok());
    assert!(links.sessions.is_empty() && links.held.is_empty());
    // Whose replica does not come back, its last words are dropped after a while.
    links.bind("s3", "gone", None);
    links.route("s3", signal("s3"));
    links.close("s3", closed("s3"), t0);
    links.retry_held(t0 + CLOSED_HELD_FOR / 2);
    assert_eq!(links.held["s3"].len(), 2, "still waiting");
    links.retry_held(t0 + CLOSED_HELD_FOR + Duration::from_secs(1));
    assert!(links.sessions.is_empty() && links.held.is_empty());
    // An ending of a session no replica ever knew is not held.
    links.close("s4", closed("s4"), t0);
    assert!(links.held.is_empty());
}

#[test]
fn room_messages_a_full_stream_cannot_take_go_out_later_in_order() {
    let mut links = Links::default();
    let (a, mut a_rx) = mpsc::channel(1);
    let (b, mut b_rx) = mpsc::channel(8);
    links.up.insert("a".into(), a);
    links.room_links.insert(
        7,
        RoomLink {
            via: "a".into(),
            peer_features: Default::default(),
        },
    );
    // Stand-ins for the link's room messages, told apart by their ids.
    for id in ["r1", "r2", "r3"] {
        links.relay(7, signal(id));
    }
    assert_eq!(signals_in(&mut a_rx), ["r1"]);
    assert_eq!(links.held_relays[&7].len(), 2, "the full stream left two");
    links.retry_held(Instant::now());
    assert_eq!(signals_in(&mut a_rx), ["r2"]);
    links.retry_held(Instant::now());
    assert_eq!(signals_in(&mut a_rx), ["r3"]);
    assert!(links.held_relays.is_empty());
    // With the replica that opened the link away, another one carries them.
    links.up.remove("a");
    links.up.insert("b".into(), b);
    links.relay(7, signal("r4"));
    assert_eq!(signals_in(&mut b_rx), ["r4"]);
    // With none up they wait, and go once one is.
    links.up.clear();
    links.relay(7, signal("r5"));
    let (c, mut c_rx) = mpsc::channel(8);
    links.up.insert("c".into(), c);
    links.retry_held(Instant::now());
    assert_eq!(signals_in(&mut c_rx), ["r5"]);
}

#[test]
fn held_signals_are_bounded() {
    let mut links = Links::default();
    links.bind("s1", "gone", None);
    for _ in 0..1000 {
        links.route("s1", signal("s1"));
    }
    assert_eq!(links.held["s1"].len(), HELD_PER_SESSION);
    assert_eq!(
        links.dropped,
        1000 - HELD_PER_SESSION as u64,
        "counted, to be logged"
    );
    links.retry_held(Instant::now());
    assert_eq!(links.dropped, 0, "logged once");
}

#[tokio::test]
async fn ip_addresses_need_no_lookup() {
    assert_eq!(
        resolve("http://127.0.0.1:7001").await,
        vec!["http://127.0.0.1:7001"]
    );
    assert_eq!(
        resolve("http://[::1]:7001/").await,
        vec!["http://[::1]:7001"]
    );
    assert!(resolve("grpc://x").await.is_empty());
}

#[test]
fn a_link_speaks_the_newer_forms_only_through_a_replica_that_carries_them() {
    use treffpunkt_proto::features::Features;
    let mut links = Links::default();
    let (new, _new_rx) = mpsc::channel(8);
    let (old, _old_rx) = mpsc::channel(8);
    links.up.insert("new".into(), new);
    links.replica_features.insert("new".into(), Features::ALL);
    links.room_links.insert(
        1,
        RoomLink {
            via: "new".into(),
            peer_features: Features::ALL,
        },
    );
    assert_eq!(links.link_features(1), Features::ALL, "through its opener");
    assert_eq!(
        links.link_features(2),
        Features::default(),
        "a link not opened"
    );

    // The replica that opened it goes; the only one left is of the earlier release.
    links.up.remove("new");
    links.replica_features.remove("new");
    links.up.insert("old".into(), old);
    links
        .replica_features
        .insert("old".into(), Features::default());
    assert_eq!(
        links.link_features(1),
        Features::default(),
        "a replica of the earlier release would drop the newer forms"
    );
}

#[test]
fn what_waits_for_a_session_that_moves_to_a_replica_of_an_earlier_release_takes_its_forms() {
    use treffpunkt_proto::features::Features;
    let mut links = Links::default();
    links.replica_features.insert("new".into(), Features::ALL);
    links.bind("s1", "new", Some("public/chor".into()));
    let person = |id: &str| v1::Participant {
        participant_id: id.into(),
        ..v1::Participant::default()
    };
    let together = v1::Signal::new(v1::signal::Kind::ParticipantsJoined(
        v1::ParticipantsJoined {
            participants: vec![person("a"), person("b")],
        },
    ));
    let message = event_message(Event::Signal {
        session_id: "s1".into(),
        signal: together,
    });
    // Held: the replica's stream is away.
    links.route("s1", message);
    links.route("s1", signal("s1"));

    // The client resumes through a replica of the earlier release (a rollback).
    let (old, mut old_rx) = mpsc::channel(8);
    links.up.insert("old".into(), old);
    links
        .replica_features
        .insert("old".into(), Features::default());
    links.bind("s1", "old", None);
    links.flush("old");
    let kinds: Vec<String> = session_signals(&mut old_rx)
        .into_iter()
        .map(
            |signal| match signal.signal.and_then(|signal| signal.kind) {
                Some(v1::signal::Kind::ParticipantJoined(participant)) => {
                    participant.participant_id
                }
                Some(v1::signal::Kind::Error(_)) => "error".to_owned(),
                other => panic!("only forms the earlier release reads, not {other:?}"),
            },
        )
        .collect();
    assert_eq!(kinds, ["a", "b", "error"], "in order, each newcomer alone");
}

#[test]
fn a_roster_held_for_a_link_takes_the_forms_of_the_replica_that_comes_back() {
    use crate::core::{LeaveReason, LinkId, RelayMessage};
    use treffpunkt_proto::features::Features;
    let info = super::forms::tests::info;
    let mut links = Links::default();
    // Opened by a replica of this release, for a node of this release; that replica is away.
    links.room_links.insert(
        1,
        RoomLink {
            via: "new".into(),
            peer_features: Features::ALL,
        },
    );
    let relay = |message| {
        event_message(Event::Relay {
            link: LinkId(1),
            room: "public/chor".into(),
            to_node: "node-b".into(),
            message,
        })
    };
    let roster = RelayMessage::Participants(vec![(1, info("a")), (2, info("b"))]);
    links.relay(1, relay(roster));
    let left = RelayMessage::Left {
        peer: 1,
        reason: LeaveReason::Left,
    };
    links.relay(1, relay(left));

    // Only a replica of the earlier release comes back (a rollback during the outage).
    let (old, mut old_rx) = mpsc::channel(8);
    links.stream_up("old", old, Features::default());
    links.retry_held(Instant::now());
    let kinds: Vec<String> = std::iter::from_fn(|| old_rx.try_recv().ok())
        .map(|message| match message.kind {
            Some(NodeKind::Relay(v1::RoomRelay {
                kind: Some(kind),
                room,
                to_node,
                ..
            })) => {
                assert_eq!((room.as_str(), to_node.as_str()), ("public/chor", "node-b"));
                match kind {
                    v1::room_relay::Kind::Participant(participant) => {
                        format!("participant {}", participant.peer)
                    }
                    v1::room_relay::Kind::Left(left) => format!("left {}", left.peer),
                    other => panic!("only forms the earlier release reads, not {other:?}"),
                }
            }
            other => panic!("a room message, not {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["participant 1", "participant 2", "left 1"],
        "in order, each participant alone"
    );
    assert!(links.held_relays.is_empty(), "nothing left behind");
}

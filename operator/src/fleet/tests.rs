//! The fleet's bookkeeping, without sockets.

use std::sync::Arc;

use super::*;

fn register(node: &str, hosted: &[&str]) -> v1::Register {
    v1::Register {
        node_id: node.to_owned(),
        capacity: Some(v1::Capacity {
            max_participants: 10,
        }),
        hosted_rooms: vec![v1::HostedRoom {
            room: None,
            session_ids: hosted.iter().map(|s| (*s).to_owned()).collect(),
        }],
        ..v1::Register::default()
    }
}

fn room() -> RoomKey {
    RoomKey {
        tenant: TenantName::new("public").unwrap(),
        name: RoomName::new("chor").unwrap(),
    }
}

async fn open(fleet: &Fleet, node: &str, session: &str) -> mpsc::Receiver<ClientEvent> {
    fleet
        .open_session(
            &NodeId(node.to_owned()),
            room(),
            v1::OpenSession {
                session_id: session.to_owned(),
                ..v1::OpenSession::default()
            },
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_lost_node_that_does_not_come_back_moves_its_sessions() {
    let fleet = Fleet::default();
    let (tx, _rx) = mpsc::channel(16);
    let attachment = fleet.attach(register("a", &[]), tx).unwrap();
    let mut events = open(&fleet, "a", "s1").await;
    assert!(fleet.lose(&NodeId("a".into()), attachment));
    assert!(fleet.nodes().is_empty(), "a lost node takes no rooms");
    assert!(events.try_recv().is_err(), "nothing moves during the grace");
    fleet.expire(&NodeId("a".into()), attachment);
    assert_eq!(events.try_recv(), Ok(ClientEvent::Move));
}

#[tokio::test]
async fn a_node_that_registers_carries_its_hosted_sessions_until_it_reports_its_load() {
    let fleet = Fleet::default();
    let (tx, _rx) = mpsc::channel(16);
    let mut hosting = register("a", &["s1", "s2"]);
    hosting.hosted_rooms[0].room = Some(v1::RoomRef {
        tenant: "public".into(),
        name: "chor".into(),
    });
    fleet.attach(hosting, tx).unwrap();
    let nodes = fleet.nodes();
    assert_eq!((nodes[0].participants, nodes[0].rooms), (2, 1));
    assert_eq!(fleet.room_participants(&room()), 2);
    let (tx, _rx) = mpsc::channel(16);
    fleet.attach(register("b", &[]), tx).unwrap();
    let idle = fleet.nodes().into_iter().find(|node| node.id.0 == "b");
    assert_eq!(
        idle.map(|node| (node.participants, node.rooms)),
        Some((0, 0))
    );
}

#[tokio::test]
async fn a_node_full_with_the_sessions_routed_to_it_takes_no_more_before_it_reports() {
    let fleet = Fleet::default();
    let (tx, mut to_node) = mpsc::channel(16);
    fleet.attach(register("a", &[]), tx).unwrap();
    // Ten joins routed to it (its capacity) before it reports any of them.
    for n in 1..=10 {
        open(&fleet, "a", &format!("s{n}")).await;
    }
    let refused = fleet
        .open_session(
            &NodeId("a".into()),
            room(),
            v1::OpenSession {
                session_id: "s11".into(),
                ..v1::OpenSession::default()
            },
        )
        .await;
    assert!(
        matches!(refused, Err(FleetError::Full(ref node)) if node.0 == "a"),
        "{refused:?}"
    );
    let mut sent = 0;
    while to_node.try_recv().is_ok() {
        sent += 1;
    }
    assert_eq!(sent, 10, "the node was not asked to open the eleventh");
    assert!(fleet.nodes()[0].participants >= 10);
}

#[tokio::test]
async fn a_large_room_s_roster_arrives_whole_and_a_client_that_never_reads_is_let_go() {
    let fleet = Fleet::default();
    let (tx, _to_node) = mpsc::channel(16);
    fleet.attach(register("a", &[]), tx).unwrap();
    let mut events = open(&fleet, "a", "s1").await;
    let node = NodeId("a".into());
    let joined = || {
        ClientEvent::Signal(v1::Signal::new(v1::signal::Kind::ParticipantJoined(
            v1::Participant::default(),
        )))
    };
    // Everyone on the room's other nodes, announced one by one before the page reads any.
    for _ in 0..1000 {
        assert!(fleet.deliver(&node, "s1", joined()), "the session stays");
    }
    let mut read = 0;
    while events.try_recv().is_ok() {
        read += 1;
    }
    assert_eq!(read, 1000);
    // A client that reads nothing at all is let go once its queue is full.
    let delivered = (0..=sessions::CLIENT_QUEUE)
        .take_while(|_| fleet.deliver(&node, "s1", joined()))
        .count();
    assert_eq!(delivered, sessions::CLIENT_QUEUE);
}

#[tokio::test]
async fn a_node_that_comes_back_in_time_keeps_its_sessions() {
    let fleet = Fleet::default();
    let (tx, _rx) = mpsc::channel(16);
    let attachment = fleet.attach(register("a", &[]), tx).unwrap();
    let mut events = open(&fleet, "a", "s1").await;
    fleet.lose(&NodeId("a".into()), attachment);
    let (tx, _rx2) = mpsc::channel(16);
    fleet.attach(register("a", &["s1"]), tx).unwrap();
    fleet.expire(&NodeId("a".into()), attachment);
    assert!(events.try_recv().is_err(), "the session stays");
    assert_eq!(fleet.nodes().len(), 1);
}

#[tokio::test]
async fn a_restarted_node_moves_the_sessions_it_no_longer_has() {
    let fleet = Fleet::default();
    let (tx, rx) = mpsc::channel(16);
    fleet.attach(register("a", &[]), tx).unwrap();
    let mut kept = open(&fleet, "a", "s1").await;
    let mut gone = open(&fleet, "a", "s2").await;
    // The old process is gone, and its stream with it.
    drop(rx);
    let (tx, _rx2) = mpsc::channel(16);
    fleet.attach(register("a", &["s1"]), tx).unwrap();
    assert!(kept.try_recv().is_err());
    assert_eq!(gone.try_recv(), Ok(ClientEvent::Move));
}

#[tokio::test]
async fn draining_with_moving_moves_the_sessions_and_is_announced() {
    let fleet = Fleet::default();
    let mut node_events = fleet.node_events();
    let (tx, _rx) = mpsc::channel(16);
    fleet.attach(register("a", &[]), tx).unwrap();
    let mut events = open(&fleet, "a", "s1").await;
    fleet.mark_draining(&NodeId("a".into()), true);
    assert_eq!(events.try_recv(), Ok(ClientEvent::Move));
    assert!(!fleet.is_available(&NodeId("a".into())));
    assert!(matches!(
        node_events.try_recv(),
        Ok(NodeEvent::Draining { .. })
    ));
    fleet.mark_draining(&NodeId("a".into()), true);
    assert!(node_events.try_recv().is_err(), "announced once");
}

#[tokio::test]
async fn a_node_that_registers_draining_takes_nothing_from_its_first_message_on() {
    let fleet = Fleet::default();
    let mut node_events = fleet.node_events();
    let (tx, mut to_node) = mpsc::channel(16);
    let mut draining = register("a", &["s1"]);
    draining.draining = Some(v1::Draining {
        move_sessions: true,
        deadline_unix_ms: 0,
    });
    fleet.attach(draining, tx).unwrap();
    let a = NodeId("a".into());
    assert!(!fleet.is_available(&a));
    assert!(fleet.is_attached(&a), "its rooms still span it");
    assert_eq!(
        fleet
            .resume_session(&a, room(), "s1", ("a-first", 0))
            .await
            .err(),
        Some(ResumeError::NodeUnavailable),
        "a session there is not resumed there"
    );
    assert!(to_node.try_recv().is_err(), "the node was asked nothing");
    assert!(matches!(
        node_events.try_recv(),
        Ok(NodeEvent::Draining { .. })
    ));
    // The `Draining` message that follows changes nothing.
    fleet.mark_draining(&a, true);
    assert!(node_events.try_recv().is_err(), "announced once");
}

/// The node's answer to the resume it was asked last.
fn answer(
    to_node: &mut mpsc::Receiver<v1::ControlMessage>,
    outcome: v1::ResumeOutcome,
) -> v1::ResumeAnswer {
    let Ok(Some(ControlKind::ResumeSession(asked))) = to_node.try_recv().map(|m| m.kind) else {
        panic!("the node was asked to resume");
    };
    v1::ResumeAnswer {
        session_id: asked.session_id,
        request_id: asked.request_id,
        outcome: outcome as i32,
        generation: asked.generation + 1,
    }
}

#[tokio::test]
async fn a_session_moves_here_only_when_its_node_accepts_the_ticket() {
    let fleet = Arc::new(Fleet::default());
    let (tx, mut to_node) = mpsc::channel(16);
    let a = NodeId("a".into());
    fleet.attach(register("a", &[]), tx).unwrap();
    let mut holder = open(&fleet, "a", "s1").await;
    to_node.try_recv().unwrap();

    for (outcome, expected) in [
        (v1::ResumeOutcome::Stale, Err(ResumeError::Refused)),
        (v1::ResumeOutcome::Ended, Err(ResumeError::Refused)),
        (v1::ResumeOutcome::Lost, Err(ResumeError::Lost)),
        (v1::ResumeOutcome::Resumed, Ok(1)),
    ] {
        let resuming = tokio::spawn({
            let fleet = fleet.clone();
            async move {
                fleet
                    .resume_session(&NodeId("a".into()), room(), "s1", ("", 0))
                    .await
                    .map(|resumed| resumed.generation)
            }
        });
        tokio::task::yield_now().await;
        let answer = answer(&mut to_node, outcome);
        // Another node cannot answer for a's session.
        fleet.answer_resume(&NodeId("b".into()), answer.clone());
        assert!(fleet.deliver(&a, "s1", ClientEvent::Move));
        assert_eq!(
            holder.try_recv(),
            Ok(ClientEvent::Move),
            "still the holder's"
        );
        fleet.answer_resume(&a, answer);
        assert_eq!(resuming.await.unwrap(), expected, "{outcome:?}");
    }
    assert_eq!(
        holder.try_recv(),
        Ok(ClientEvent::Replaced),
        "only the accepted resume takes the session from its holder"
    );
}

#[tokio::test]
async fn a_session_resumes_only_on_an_available_node() {
    let fleet = Fleet::default();
    let (tx, _to_node) = mpsc::channel(16);
    let attachment = fleet.attach(register("a", &[]), tx).unwrap();
    fleet.lose(&NodeId("a".into()), attachment);
    for node in ["a", "b"] {
        let resumed = fleet
            .resume_session(&NodeId(node.into()), room(), "s2", ("", 0))
            .await;
        assert_eq!(resumed.err(), Some(ResumeError::NodeUnavailable));
    }
}

#[tokio::test]
async fn a_second_registration_of_a_live_node_id_is_refused_and_the_live_node_stays() {
    let fleet = Fleet::default();
    let (tx, mut to_live) = mpsc::channel(16);
    fleet.attach(register("a", &[]), tx).unwrap();
    let mut events = open(&fleet, "a", "s1").await;
    let _ = to_live.try_recv();
    let (rogue, _rogue_rx) = mpsc::channel(16);
    assert_eq!(
        fleet.attach(register("a", &[]), rogue),
        Err(FleetError::AlreadyAttached(NodeId("a".into())))
    );
    assert_eq!(fleet.nodes().len(), 1, "the live node keeps its place");
    assert!(events.try_recv().is_err(), "its session does not move");
    fleet
        .signal("s1", v1::Signal::error("x", "y"))
        .await
        .expect("signals still reach the live node");
    assert!(
        to_live.try_recv().is_ok(),
        "through the live node's own stream"
    );
}

#[tokio::test]
async fn a_node_of_another_pool_cannot_take_the_place_of_a_node_that_may_come_back() {
    let fleet = Fleet::default();
    let in_pool = |pool: &str| v1::Register {
        pool: pool.to_owned(),
        ..register("a", &[])
    };
    let (tx, _rx) = mpsc::channel(16);
    let attachment = fleet.attach(in_pool("city"), tx).unwrap();
    let mut events = open(&fleet, "a", "s1").await;
    fleet.lose(&NodeId("a".into()), attachment);

    let (impostor, _impostor_rx) = mpsc::channel(16);
    assert_eq!(
        fleet.attach(in_pool("partner"), impostor),
        Err(FleetError::OtherPool {
            node: NodeId("a".into()),
            pool: "city".into()
        })
    );
    assert!(
        events.try_recv().is_err(),
        "the lost node's sessions stay where they are"
    );
    let (tx, _rx) = mpsc::channel(16);
    fleet
        .attach(in_pool("city"), tx)
        .expect("the node itself comes back");
}

#[test]
fn a_room_counts_no_more_than_its_nodes_carry_however_much_they_report() {
    let fleet = Fleet::default();
    let claim = |participants| v1::LoadReport {
        participants: 3,
        room_loads: vec![v1::RoomLoad {
            room: Some(v1::RoomRef {
                tenant: "public".into(),
                name: "chor".into(),
            }),
            participants,
        }],
        ..v1::LoadReport::default()
    };
    for (node, participants) in [("a", u32::MAX), ("b", 2)] {
        let (tx, _rx) = mpsc::channel(16);
        fleet.attach(register(node, &[]), tx).unwrap();
        fleet.update_load(&NodeId(node.into()), claim(participants));
    }
    assert_eq!(
        fleet.room_participants(&room()),
        5,
        "three from the node that claimed more, two from the other"
    );
    let public = TenantName::new("public").unwrap();
    assert_eq!(fleet.tenant_usage(&public), (5, 1));
}

#[test]
fn a_partners_node_cannot_make_another_tenants_rooms_look_full() {
    let verein = TenantName::new("verein").unwrap();
    let reserved = verein.clone();
    let fleet = Fleet::default().counting_reports_by(Arc::new(move |pool| {
        (pool == "vereinsheim").then(|| vec![reserved.clone()])
    }));
    let report = |tenant: &str, participants| v1::LoadReport {
        participants,
        room_loads: vec![v1::RoomLoad {
            room: Some(v1::RoomRef {
                tenant: tenant.into(),
                name: "chor".into(),
            }),
            participants,
        }],
        ..v1::LoadReport::default()
    };
    // The city's node carries two of the public room; the partner's node claims 200 more in
    // it, and its own three in the partner's room.
    for (node, pool, reports) in [
        ("city:a", "city", vec![report("public", 2)]),
        ("vereinsheim:b", "vereinsheim", vec![report("public", 200)]),
    ] {
        let (tx, _rx) = mpsc::channel(16);
        let mut registration = register(node, &[]);
        registration.pool = pool.into();
        fleet.attach(registration, tx).unwrap();
        for load in reports {
            fleet.update_load(&NodeId(node.into()), load);
        }
    }
    assert_eq!(
        fleet.room_participants(&room()),
        2,
        "the partner's claim is not counted"
    );
    let public = TenantName::new("public").unwrap();
    assert_eq!(fleet.tenant_usage(&public), (2, 1));
    fleet.update_load(&NodeId("vereinsheim:b".into()), report("verein", 3));
    assert_eq!(
        fleet.tenant_usage(&verein),
        (3, 1),
        "its own tenant's rooms count"
    );
}

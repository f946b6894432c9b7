//! Resuming a session with its ticket, and moving a session whose node went away.

use super::*;

/// Anna in the room "chor" on node a, whose commands so far are read.
async fn anna_in_chor() -> (Platform, Admitted) {
    let mut platform = Platform::public([persistent("chor", None)]);
    platform.attach("a", "");
    let joined = platform
        .admission
        .join(&key("chor"), "Anna", &Credentials::default())
        .await
        .unwrap();
    platform.commands("a");
    (platform, joined)
}

#[tokio::test]
async fn a_ticket_resumes_its_session_on_its_node_once() {
    let (mut platform, mut joined) = anna_in_chor().await;
    let ticket = joined.attachment.ticket.clone();

    let (resumed, asked) = platform
        .resume_answered("chor", &ticket, "a", v1::ResumeOutcome::Resumed)
        .await;
    let resumed = resumed.unwrap();

    assert!(!resumed.moved);
    assert_eq!(resumed.member, joined.member);
    assert_eq!(resumed.attachment.session_id, joined.attachment.session_id);
    assert_eq!(resumed.attachment.node, node("a"));
    let asked = asked.expect("the node was asked");
    assert_eq!(asked.session_id, joined.attachment.session_id);
    assert_eq!(asked.node_instance, "a-first", "the instance that held it");
    assert_eq!(asked.generation, 0, "the ticket's generation");
    assert_eq!(resumed.attachment.generation, 1);
    let fresh = tickets::open(
        &keys().tickets.get(),
        &resumed.attachment.ticket,
        &key("chor"),
    )
    .unwrap();
    assert_eq!(
        fresh.generation, 1,
        "the resumed client's ticket is the next generation"
    );
    assert_eq!(
        joined.attachment.events.try_recv(),
        Ok(ClientEvent::Replaced),
        "the connection that held the session is told"
    );

    // The same ticket again: the node finds it stale, and the session stays where it is.
    let (again, _) = platform
        .resume_answered("chor", &ticket, "a", v1::ResumeOutcome::Stale)
        .await;
    assert_eq!(
        again.err().map(|r| r.code),
        Some(RefusalCode::ResumeRefused)
    );
    let mut resumed = resumed;
    assert!(resumed.attachment.events.try_recv().is_err(), "untouched");
    assert!(platform.opened("a").is_empty(), "nothing new was opened");
}

#[tokio::test]
async fn a_ticket_whose_node_lost_the_session_continues_it_elsewhere() {
    let (mut platform, joined) = anna_in_chor().await;

    let (resumed, _) = platform
        .resume_answered(
            "chor",
            &joined.attachment.ticket,
            "a",
            v1::ResumeOutcome::Lost,
        )
        .await;

    let resumed = resumed.unwrap();
    assert!(resumed.moved);
    assert_eq!(resumed.member.participant_id, joined.member.participant_id);
    let opened = platform.opened("a");
    assert_eq!(opened.len(), 1);
    assert_eq!(
        opened[0].continues, joined.attachment.session_id,
        "the node learns which lost session this continues, and opens it once"
    );
}

/// Waits the five seconds the node has to answer.
#[tokio::test]
async fn a_ticket_whose_node_does_not_answer_continues_it_elsewhere() {
    let (mut platform, joined) = anna_in_chor().await;

    // Node a is asked, and says nothing.
    let resumed = platform
        .admission
        .resume(&key("chor"), &joined.attachment.ticket, None)
        .await
        .expect("a session that its node does not answer for continues");

    assert!(resumed.moved, "the client makes its media connection again");
    assert_eq!(resumed.member.participant_id, joined.member.participant_id);
    let asked = platform.commands("a");
    let closed = asked.iter().any(|kind| {
        matches!(kind, ControlKind::CloseSession(close) if close.session_id == joined.attachment.session_id)
    });
    assert!(
        closed,
        "the node, should it still hold the session, closes it: {asked:?}"
    );
    let opened: Vec<_> = asked
        .iter()
        .filter_map(|kind| match kind {
            ControlKind::OpenSession(open) => Some(open.continues.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(opened, [joined.attachment.session_id.as_str()]);
}

#[tokio::test]
async fn a_ticket_for_another_room_or_no_ticket_at_all_is_refused() {
    let mut platform = Platform::public([persistent("chor", None), persistent("skat", None)]);
    platform.attach("a", "");
    let joined = platform
        .admission
        .join(&key("chor"), "Anna", &Credentials::default())
        .await
        .unwrap();
    platform.commands("a");

    for (room, ticket) in [
        ("skat", joined.attachment.ticket.as_str()),
        ("chor", "garbage"),
        ("chor", ""),
        ("chor", "A.B"),
    ] {
        let refusal = platform
            .admission
            .resume(&key(room), ticket, None)
            .await
            .expect_err("refused");
        assert_eq!(refusal.code, RefusalCode::ResumeRefused, "{room} {ticket}");
    }
    assert!(platform.commands("a").is_empty(), "no node was asked");
}

#[tokio::test]
async fn a_ticket_whose_node_is_gone_gets_a_new_session_elsewhere() {
    let mut platform = Platform::public([persistent("chor", None)]);
    platform.attach("b", "");
    let member = Member {
        participant_id: "p1".into(),
        name: DisplayName::new("Anna").unwrap(),
        max_participants: 20,
        video_last_n: 16,
        moderator: false,
        lobby: false,
        first_moderates: false,
        room_title: None,
    };
    let ticket = tickets::seal(
        &keys().tickets.get(),
        &key("chor"),
        &member,
        (&node("gone"), "gone-first"),
        ("s-old", 0),
    );

    let resumed = platform
        .admission
        .resume(&key("chor"), &ticket, None)
        .await
        .unwrap();

    assert!(resumed.moved, "the client must connect its media again");
    assert_eq!(resumed.member.participant_id, "p1", "the same participant");
    assert_eq!(resumed.attachment.node, node("b"));
    assert_ne!(resumed.attachment.session_id, "s-old");
    let opened = platform.opened("b");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].continues, "s-old");
}

#[tokio::test]
async fn a_moved_session_is_closed_on_its_node_and_opened_on_the_room_s_node() {
    let (mut platform, joined) = anna_in_chor().await;
    // The room was placed elsewhere meanwhile (by another gateway, after "a" failed there).
    platform.attach("b", "");
    let stored = platform.stored("chor").await.unwrap();
    platform
        .store
        .place_room(&stored.key, &stored.revision, vec![node("b")])
        .await
        .unwrap();

    let moved = platform
        .admission
        .move_session(&key("chor"), &joined.member, &joined.attachment, None)
        .await
        .unwrap();

    assert_eq!(moved.node, node("b"));
    assert_ne!(moved.session_id, joined.attachment.session_id);
    assert!(matches!(
        platform.commands("a").as_slice(),
        [ControlKind::CloseSession(close)] if close.session_id == joined.attachment.session_id
    ));
    let [open] = platform.opened("b").try_into().expect("one session opened");
    let grant = keys()
        .grants
        .get()
        .open_grant(&open.grant.unwrap(), "b", 0)
        .expect("a grant for node b");
    assert_eq!(grant.participant_id, joined.member.participant_id);
}

#[tokio::test]
async fn a_ticket_whose_node_drains_is_closed_there_and_continued_elsewhere() {
    let (mut platform, joined) = anna_in_chor().await;
    platform.attach("b", "");
    // Node "a" drains while Anna's client is away (its control plane restarted, say).
    platform.fleet.mark_draining(&node("a"), false);

    let resumed = platform
        .admission
        .resume(&key("chor"), &joined.attachment.ticket, None)
        .await
        .unwrap();

    assert!(resumed.moved, "the client connects its media again");
    assert_eq!(resumed.attachment.node, node("b"));
    let closed: Vec<String> = platform
        .commands("a")
        .into_iter()
        .filter_map(|kind| match kind {
            ControlKind::CloseSession(close) => Some(close.session_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        closed,
        vec![joined.attachment.session_id.clone()],
        "the draining node lets the old session go, so that it empties"
    );
    let opened = platform.opened("b");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].continues, joined.attachment.session_id);
}

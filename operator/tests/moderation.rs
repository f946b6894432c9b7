//! Moderators, the lobby and raised hands, against standalone mode in this process with Rust
//! clients over real sockets: every moderator action is carried out for a moderator and refused
//! to anyone else, with nothing happening then; a muted microphone reaches nobody even from a
//! client that keeps sending, until its owner switches it on again.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::SinkExt;
use serde_json::json;
use support::events::{closed, error, moderate, notice};
use support::sockets::{Signalling, next_reply};
use support::{keeps_receiving, wait_until};
use tokio_tungstenite::tungstenite::Message;
use treffpunkt_client::signalling::{
    ClientMessage, ModerationAction, ModeratorRequest, ServerMessage,
};
use treffpunkt_client::{Error, JoinOptions, Kind, Participant, Publish, signal_url};
use treffpunkt_operator::seed;
use treffpunkt_operator::standalone::{self, Standalone, StandaloneConfig};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A club whose board meets in a room with a lobby; its moderators have a password.
const MANIFESTS: &str = r#"
apiVersion: treffpunkt.io/v1alpha1
kind: Tenant
metadata: {name: verein}
spec:
  displayName: Sportverein
  policy: {adhocRooms: true}
---
apiVersion: treffpunkt.io/v1alpha1
kind: Room
metadata: {name: sitzung, namespace: tenant-verein}
spec:
  access: Lobby
  moderatorPasswordSecretRef: {name: moderation, key: password}
---
apiVersion: v1
kind: Secret
metadata: {name: moderation, namespace: tenant-verein}
stringData: {password: Vorsitz}
"#;

async fn start() -> Standalone {
    let seed = seed::parse(MANIFESTS).expect("the manifests are valid");
    standalone::start(StandaloneConfig {
        http: SocketAddr::new(LOOPBACK, 0),
        grpc: SocketAddr::new(LOOPBACK, 0),
        udp: SocketAddr::new(LOOPBACK, 0),
        announce_ip: LOOPBACK,
        tenants: seed.tenants,
        rooms: seed.rooms,
        secrets: seed.secrets,
        ..StandaloneConfig::default()
    })
    .await
    .expect("standalone mode starts")
}

fn publishing() -> JoinOptions {
    JoinOptions {
        publish: Some(Publish::default()),
        ..JoinOptions::default()
    }
}

/// Whether `receiver` gets no more of `source`'s audio for a second (it was let through
/// before).
async fn hears_nothing_of(receiver: &Participant, source: &Participant) -> bool {
    // What was in flight when it was held arrives first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = receiver.stats(&source.id, Kind::Audio).packets;
    tokio::time::sleep(Duration::from_secs(1)).await;
    receiver.stats(&source.id, Kind::Audio).packets == before
}

async fn hears(receiver: &Participant, source: &Participant) -> bool {
    let packets = || receiver.stats(&source.id, Kind::Audio).packets;
    let before = packets();
    wait_until(Duration::from_secs(5), || packets() > before + 10).await
}

/// Knocks at `room` with a bare WebSocket; returns it once the join was sent.
async fn knock(server: &Standalone, room: &str, name: &str) -> Signalling {
    let url = signal_url(server.http, "verein", room);
    let mut socket = tokio_tungstenite::connect_async(&url).await.unwrap().0;
    let join = json!({"type": "join", "name": name}).to_string();
    socket.send(Message::text(join)).await.unwrap();
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lobby_holds_people_until_a_moderator_lets_them_in_or_not() {
    let server = start().await;
    // Before any moderator is there, the waiting screen says so.
    let mut eve = knock(&server, "sitzung", "Eve").await;
    let waiting = next_reply(&mut eve).await.expect("Eve is told she waits");
    assert_eq!(
        waiting,
        json!({"type": "waiting", "moderatorPresent": false})
    );

    let url = signal_url(server.http, "verein", "sitzung");
    let with_password = JoinOptions {
        password: Some("Vorsitz".into()),
        ..publishing()
    };
    let mut anna = Participant::join_with(&url, "Anna", with_password)
        .await
        .expect("the chair comes in with the moderators' password, past the lobby");
    assert!(anna.moderator);
    assert_eq!(
        next_reply(&mut eve).await,
        Some(json!({"type": "waiting", "moderatorPresent": true})),
        "Eve learns that a moderator is there"
    );

    // Ben knocks; Anna sees him and lets him in.
    let ben = tokio::spawn(async move { Participant::join(&url, "Ben", None).await });
    let knocking = notice(&mut anna, |m| {
        matches!(m, ServerMessage::Knocking { waiting } if waiting.iter().any(|k| k.name == "Ben"))
    })
    .await
    .expect("Anna sees Ben knock");
    let ServerMessage::Knocking { waiting } = knocking else {
        unreachable!()
    };
    let ben_id = waiting.iter().find(|k| k.name == "Ben").unwrap().id.clone();
    let eve_id = waiting.iter().find(|k| k.name == "Eve").unwrap().id.clone();
    moderate(&anna, ModerationAction::Admit, Some(&ben_id));
    let mut ben = ben.await.unwrap().expect("Ben is let in");
    assert!(!ben.moderator);
    assert!(keeps_receiving(&ben, &anna).await, "Ben receives Anna");

    // Ben may not let anyone in; Anna does not let Eve in.
    moderate(&ben, ModerationAction::Admit, Some(&eve_id));
    assert_eq!(error(&mut ben).await.as_deref(), Some("not-moderator"));
    moderate(&anna, ModerationAction::Deny, Some(&eve_id));
    let told = loop {
        match next_reply(&mut eve).await {
            Some(reply) if reply["type"] == "waiting" => continue,
            other => break other,
        }
    };
    assert_eq!(
        told,
        Some(json!({"type": "closed", "reason": "denied"})),
        "Eve is told that she was not let in"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_act_and_everyone_else_is_refused() {
    let server = start().await;
    let url = signal_url(server.http, "verein", "treffen");
    let anna = Participant::join_with(&url, "Anna", publishing())
        .await
        .unwrap();
    assert!(anna.moderator, "the first into an ad-hoc room moderates");
    let mut ben = Participant::join_with(&url, "Ben", publishing())
        .await
        .unwrap();
    let mut clara = Participant::join_with(&url, "Clara", publishing())
        .await
        .unwrap();
    let mut dora = Participant::join_with(&url, "Dora", publishing())
        .await
        .unwrap();
    assert!(!ben.moderator && !clara.moderator && !dora.moderator);
    assert!(hears(&clara, &ben).await);

    // Mute: refused to Ben, carried out for Anna; Ben's client keeps sending, yet nobody hears
    // him until he switches his microphone on himself.
    moderate(&ben, ModerationAction::Mute, Some(&clara.id));
    assert_eq!(error(&mut ben).await.as_deref(), Some("not-moderator"));
    assert!(hears(&anna, &clara).await, "Clara is not muted");
    moderate(&anna, ModerationAction::Mute, Some(&ben.id));
    let muted = notice(&mut ben, |m| matches!(m, ServerMessage::Request { .. })).await;
    assert_eq!(
        muted,
        Some(ServerMessage::Request {
            kind: ModeratorRequest::Muted
        }),
        "Ben is told"
    );
    let seen = notice(&mut clara, |m| {
        matches!(m, ServerMessage::Media { participant_id, audio_muted: true, .. } if *participant_id == ben.id)
    })
    .await;
    assert!(seen.is_some(), "Clara sees Ben muted");
    assert!(hears_nothing_of(&clara, &ben).await, "nobody hears Ben");
    ben.send(ClientMessage::Media {
        audio_muted: false,
        video_muted: false,
        screen_sharing: false,
    });
    assert!(hears(&clara, &ben).await, "Ben unmuted himself");

    // Hands go up in order; only a moderator lowers someone else's.
    let order = |ids: &[&str]| {
        let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        move |m: &ServerMessage| matches!(m, ServerMessage::Hands { order } if *order == ids)
    };
    clara.send(ClientMessage::Hand { raised: true });
    assert!(
        notice(&mut dora, order(&[clara.id.as_str()]))
            .await
            .is_some()
    );
    ben.send(ClientMessage::Hand { raised: true });
    let both = [clara.id.as_str(), ben.id.as_str()];
    assert!(
        notice(&mut dora, order(&both)).await.is_some(),
        "Dora sees both hands in order"
    );
    moderate(&ben, ModerationAction::LowerHand, Some(&clara.id));
    assert_eq!(error(&mut ben).await.as_deref(), Some("not-moderator"));
    moderate(&anna, ModerationAction::LowerHand, Some(&clara.id));
    assert!(notice(&mut dora, order(&[ben.id.as_str()])).await.is_some());

    // Remove and lock: refused to Dora, carried out for Anna.
    moderate(&dora, ModerationAction::Remove, Some(&clara.id));
    assert_eq!(error(&mut dora).await.as_deref(), Some("not-moderator"));
    moderate(&dora, ModerationAction::Lock, None);
    assert_eq!(error(&mut dora).await.as_deref(), Some("not-moderator"));
    moderate(&anna, ModerationAction::Remove, Some(&clara.id));
    assert_eq!(closed(&mut clara).await.as_deref(), Some("removed"));
    moderate(&anna, ModerationAction::Lock, None);
    assert!(
        notice(&mut dora, |m| matches!(
            m,
            ServerMessage::RoomState { locked: true }
        ))
        .await
        .is_some()
    );
    match Participant::join(&url, "Emil", None).await {
        Err(Error::Refused { code, .. }) => assert_eq!(code, "room-locked"),
        other => panic!("Emil came into a locked room: {:?}", other.map(|p| p.id)),
    }
    moderate(&anna, ModerationAction::Unlock, None);

    // The last moderator leaves: the one in longest (Ben) moderates now; he ends the meeting.
    anna.leave().await;
    let passed = notice(&mut dora, |m| {
        matches!(m, ServerMessage::Role { participant_id, moderator: true } if *participant_id == ben.id)
    })
    .await;
    assert!(passed.is_some(), "the role passes on to Ben");
    moderate(&dora, ModerationAction::End, None);
    assert_eq!(error(&mut dora).await.as_deref(), Some("not-moderator"));
    moderate(&ben, ModerationAction::End, None);
    assert_eq!(closed(&mut dora).await.as_deref(), Some("ended"));
    assert_eq!(closed(&mut ben).await.as_deref(), Some("ended"));
    server.stop();
}

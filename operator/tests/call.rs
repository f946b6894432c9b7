//! Calls through standalone mode, with real sockets on loopback: the gateway's WebSocket, the
//! media node attached over gRPC, and real UDP, DTLS and SRTP between the node and Rust clients
//! on the `webrtc` crate.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use support::attach::register_as;
use support::wait_until;
use treffpunkt_client::{
    Joining, Kind, Outgoing, OutgoingVideo, Participant, Publish, RoomEvent, signal_url,
};
use treffpunkt_operator::domain::{NodeId, Tenant};
use treffpunkt_operator::standalone::{self, Standalone, StandaloneConfig};
use treffpunkt_proto::grant::{Keyring, SharedKeyring};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn start(tenants: Vec<Tenant>) -> Standalone {
    standalone::start(StandaloneConfig {
        http: SocketAddr::new(LOOPBACK, 0),
        grpc: SocketAddr::new(LOOPBACK, 0),
        udp: SocketAddr::new(LOOPBACK, 0),
        announce_ip: LOOPBACK,
        max_participants: 50,
        tenants,
        ..StandaloneConfig::default()
    })
    .await
    .expect("standalone mode starts")
}

/// Whether `receiver` has at least `packets` intact packets of each kind from each of `sources`
/// and nothing corrupt.
fn receives_from(receiver: &Participant, sources: &[&Participant], packets: u64) -> bool {
    sources.iter().all(|source| {
        [Kind::Audio, Kind::Video].iter().all(|kind| {
            let stats = receiver.stats(&source.id, *kind);
            assert_eq!(
                stats.corrupt, 0,
                "{} got altered packets from {}",
                receiver.id, source.id
            );
            stats.packets >= packets
        })
    })
}

/// Whether, within 20 s, each of three has 25 intact packets of each kind from the other two.
async fn all_receive_each_other([a, b, c]: [&Participant; 3]) -> bool {
    wait_until(Duration::from_secs(20), || {
        receives_from(a, &[b, c], 25)
            && receives_from(b, &[a, c], 25)
            && receives_from(c, &[a, b], 25)
    })
    .await
}

fn counts(receiver: &Participant, source: &Participant) -> (u64, u64) {
    (
        receiver.stats(&source.id, Kind::Audio).packets,
        receiver.stats(&source.id, Kind::Video).packets,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_receive_each_other_and_two_go_on_when_one_leaves() {
    let server = start(Vec::new()).await;
    let url = signal_url(server.http, "public", "chor");
    let publish = Some(Publish::default());
    let anna = Participant::join(&url, "Anna", publish.clone())
        .await
        .expect("Anna joins");
    let mut ben = Participant::join(&url, "Ben", publish.clone())
        .await
        .expect("Ben joins");
    let cem = Participant::join(&url, "Cem", publish)
        .await
        .expect("Cem joins");
    assert_eq!(
        cem.others_at_join.len(),
        2,
        "Cem is welcomed with the two others"
    );
    assert!(cem.others_at_join.iter().any(|(_, name)| name == "Anna"));

    assert!(
        all_receive_each_other([&anna, &ben, &cem]).await,
        "each receives the other two's audio and video, intact"
    );

    let cem_id = cem.id.clone();
    cem.leave().await;
    let told = next_left(&mut ben).await;
    assert_eq!(
        told,
        Some((cem_id, "left".to_owned())),
        "Ben is told that Cem left"
    );

    let before = (counts(&anna, &ben), counts(&ben, &anna));
    let still_flowing = wait_until(Duration::from_secs(5), || {
        let (a_from_b, b_from_a) = (counts(&anna, &ben), counts(&ben, &anna));
        a_from_b.0 > before.0.0 + 25
            && a_from_b.1 > before.0.1 + 25
            && b_from_a.0 > before.1.0 + 25
            && b_from_a.1 > before.1.1 + 25
    })
    .await;
    assert!(
        still_flowing,
        "Anna and Ben keep receiving each other after Cem left"
    );
    anna.leave().await;
    ben.leave().await;

    let node = treffpunkt_operator::domain::NodeId("standalone".into());
    let freed = wait_until(Duration::from_secs(5), || {
        server.fleet.load(&node).is_some_and(|load| {
            load.rooms == 0
                && load.participants == 0
                && load.published_tracks == 0
                && load.forwarded_tracks == 0
        })
    })
    .await;
    assert!(
        freed,
        "the node frees everything once everyone has left: {:?}",
        server.fleet.load(&node)
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_leaving_one_after_another_are_gone_from_the_node_at_once() {
    let server = start(Vec::new()).await;
    let url = signal_url(server.http, "public", "saal");
    let speaker = Participant::join(&url, "Anna", Some(Publish::default()))
        .await
        .expect("Anna joins");
    let mut hall = Vec::new();
    for index in 0..16 {
        let name = format!("Gast {index}");
        hall.push(
            Participant::join(&url, &name, None)
                .await
                .expect("a guest joins"),
        );
    }
    let node = treffpunkt_operator::domain::NodeId("standalone".into());
    let participants = || server.fleet.load(&node).map(|load| load.participants);
    let counted = wait_until(Duration::from_secs(10), || participants() == Some(17)).await;
    assert!(counted, "the node counts everyone: {:?}", participants());

    // Each leave tells the others, so messages are on their way to the ones leaving next:
    // a leave must not be taken for a dropped connection, which the node keeps for a resume.
    for guest in hall {
        guest.leave().await;
    }
    let gone = wait_until(Duration::from_secs(4), || participants() == Some(1)).await;
    assert!(gone, "only Anna is left, at once: {:?}", participants());
    speaker.leave().await;
    server.stop();
}

/// Opens a page's signalling WebSocket on `url` and joins as `name` with `features` (sending
/// no offer).
async fn join_page(
    url: &str,
    name: &str,
    features: serde_json::Value,
) -> support::sockets::Signalling {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (mut page, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the gateway takes the WebSocket");
    let join = serde_json::json!({"type": "join", "name": name, "features": features});
    page.send(Message::Text(join.to_string().into()))
        .await
        .expect("the socket is open");
    page
}

/// Who `watcher` next hears of leaving, and why; `None` when it hears nothing for 5 s.
async fn next_left(watcher: &mut Participant) -> Option<(String, String)> {
    loop {
        if let RoomEvent::Left { id, reason } = watcher.next_event(Duration::from_secs(5)).await? {
            return Some((id, reason));
        }
    }
}

/// The id of `name` once `watcher` hears of them joining; `None` when it hears nothing for 5 s.
async fn next_joined(watcher: &mut Participant, name: &str) -> Option<String> {
    loop {
        match watcher.next_event(Duration::from_secs(5)).await? {
            RoomEvent::Joined { id, name: joined } if joined == name => return Some(id),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_page_leaves_at_once_and_a_broken_line_is_waited_for() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let server = start(Vec::new()).await;
    let url = signal_url(server.http, "public", "tab");
    let mut anna = Participant::join(&url, "Anna", None)
        .await
        .expect("Anna joins");
    let emil = join_page(&url, "Emil", serde_json::json!([])).await;
    let emil_id = next_joined(&mut anna, "Emil")
        .await
        .expect("Anna sees Emil come");
    let mut dora = join_page(&url, "Dora", serde_json::json!([])).await;
    let dora_id = next_joined(&mut anna, "Dora")
        .await
        .expect("Anna sees Dora come");

    // Emil's line breaks: his connection ends without a word, and his page may come back.
    drop(emil);
    // Dora closes her tab: the browser closes the socket as "going away".
    let going_away = CloseFrame {
        code: CloseCode::Away,
        reason: "".into(),
    };
    dora.send(Message::Close(Some(going_away)))
        .await
        .expect("the socket is open");
    let left = next_left(&mut anna).await;
    assert_eq!(
        left,
        Some((dora_id, "left".to_owned())),
        "Anna is told within 5 s that Dora left, and of Emil not yet ({emil_id} may come back)"
    );
    anna.leave().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_room_refuses_the_next_person_with_a_clear_error() {
    let mut tenant = Tenant::public();
    tenant.limits.max_participants_per_room = 2;
    let server = start(vec![tenant]).await;
    let url = signal_url(server.http, "public", "klein");
    let first = Participant::join(&url, "Eins", None)
        .await
        .expect("first joins");
    let second = Participant::join(&url, "Zwei", None)
        .await
        .expect("second joins");
    match Participant::join(&url, "Drei", None).await {
        Err(treffpunkt_client::Error::Refused { code, .. }) => assert_eq!(code, "room-full"),
        Err(other) => panic!("expected room-full, got {other}"),
        Ok(_) => panic!("a third person joined a room for two"),
    }
    first.leave().await;
    // Now there is room again.
    let third = Participant::join(&url, "Drei", None)
        .await
        .expect("room again after one left");
    second.leave().await;
    third.leave().await;
    server.stop();
}

/// A video alone, with no microphone anywhere in the room (everyone muted, a screen share of
/// 3 Mbit/s, more than a new connection's estimate allows), reaches its viewer: the node sends
/// the viewer nothing before the video fits, so no feedback comes to grow the estimate from,
/// and the node has to probe a line that carries nothing yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_alone_above_the_starting_estimate_reaches_its_viewer() {
    let server = start(Vec::new()).await;
    let url = signal_url(server.http, "public", "stumm");
    let share = Joining {
        outgoing: Some(Outgoing {
            audio: None,
            video: Some(OutgoingVideo {
                fps: 30,
                bitrate: 3_000_000,
                keyframe_interval: 60,
                keyframe_ratio: 1,
                max_packet_size: 1000,
                simulcast: false,
            }),
        }),
        ..Joining::default()
    };
    let presenter = Participant::join_as(&url, "Vortragende", share)
        .await
        .unwrap();
    let viewer = Participant::join(&url, "Zuhörer", None).await.unwrap();
    let started = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || viewer
            .stats(&presenter.id, Kind::Video)
            .packets
            >= 1_000)
        .await,
        "the viewer gets the video: {} packets in 30 s",
        viewer.stats(&presenter.id, Kind::Video).packets
    );
    eprintln!("the video reached its viewer after {:?}", started.elapsed());
    assert_eq!(viewer.stats(&presenter.id, Kind::Video).corrupt, 0);
    assert_eq!(viewer.stats(&presenter.id, Kind::Audio).packets, 0);
    presenter.leave().await;
    viewer.leave().await;
    server.stop();
}

/// The grant key of the control plane in the tests that attach nodes of their own.
const GRANT_SECRET: &[u8] = b"the grant key of the Attach tests and long enough";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_node_with_the_grant_key_attaches_and_never_under_the_live_nodes_id() {
    use tokio_stream::StreamExt;
    let key = Keyring::from_secret(GRANT_SECRET);
    let server = standalone::start(StandaloneConfig {
        http: SocketAddr::new(LOOPBACK, 0),
        grpc: SocketAddr::new(LOOPBACK, 0),
        udp: SocketAddr::new(LOOPBACK, 0),
        announce_ip: LOOPBACK,
        grant_key: Some(SharedKeyring::new(key.clone())),
        ..StandaloneConfig::default()
    })
    .await
    .expect("standalone mode starts");
    let url = signal_url(server.http, "public", "schutz");
    let anna = Participant::join(&url, "Anna", Some(Publish::default()))
        .await
        .expect("Anna joins");
    let ben = Participant::join(&url, "Ben", Some(Publish::default()))
        .await
        .expect("Ben joins");
    assert!(
        wait_until(Duration::from_secs(20), || receives_from(
            &ben,
            &[&anna],
            25
        ))
        .await,
        "Ben receives Anna before the rogue comes"
    );

    let stranger = Keyring::from_secret(b"a key that is not the platform's, long enough");
    for (node_id, key, expected, why) in [
        (
            "rogue",
            None,
            tonic::Code::Unauthenticated,
            "without a proof",
        ),
        (
            "rogue",
            Some(&stranger),
            tonic::Code::Unauthenticated,
            "with another key",
        ),
        (
            "standalone",
            Some(&key),
            tonic::Code::AlreadyExists,
            "under the live node's id",
        ),
    ] {
        let Err(status) = register_as(server.grpc, node_id, key).await.answer else {
            panic!("a registration {why} is refused")
        };
        assert_eq!(status.code(), expected, "{why}: {status}");
    }

    // A node with the key under a new id attaches, then goes away; the live node keeps
    // everything.
    let mut rogue = register_as(server.grpc, "rogue", Some(&key)).await;
    let stream = rogue.answer.as_mut().expect("a new id attaches");
    let _ = stream.next().await;
    assert_eq!(
        server.fleet.nodes().len(),
        2,
        "the rogue attached beside the node"
    );
    drop(rogue);

    let (audio, video) = counts(&ben, &anna);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = counts(&ben, &anna);
            now.0 > audio + 25 && now.1 > video + 10
        })
        .await,
        "Ben keeps receiving Anna after the rogue's attempts"
    );
    let cem = Participant::join(&url, "Cem", Some(Publish::default()))
        .await
        .expect("Cem still joins: the platform is not full");
    assert!(
        wait_until(Duration::from_secs(20), || receives_from(
            &cem,
            &[&anna],
            10
        ))
        .await,
        "Cem receives Anna on the live node"
    );
    assert!(
        wait_until(Duration::from_secs(5), || server.fleet.nodes().len() == 1).await,
        "once the rogue left, only the live node hosts rooms"
    );
}

/// The value of series `series` in OpenMetrics `text` (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_shows_in_the_gateways_and_the_nodes_metrics() {
    let metrics = SocketAddr::new(LOOPBACK, support::free_port());
    let server = support::calls::on_loopback(StandaloneConfig {
        metrics: Some(metrics),
        ..StandaloneConfig::default()
    })
    .await;
    let url = signal_url(server.http, "public", "zaehlung");
    let (anna, ben) = support::calls::anna_and_ben(&url).await;
    assert!(
        wait_until(Duration::from_secs(10), || receives_from(
            &ben,
            &[&anna],
            50
        ))
        .await
    );
    let nowhere = signal_url(server.http, "niemand", "raum");
    assert!(Participant::join(&nowhere, "Carla", None).await.is_err());
    let scrape = || async {
        let (status, body) = support::http(metrics, "GET", "/metrics").await.unwrap();
        assert_eq!(status, 200);
        body
    };
    let first = scrape().await;
    assert_eq!(
        sample(&first, "treffpunkt_joins_total{outcome=\"admitted\"}"),
        2.0
    );
    assert_eq!(
        sample(&first, "treffpunkt_joins_total{outcome=\"refused\"}"),
        1.0
    );
    assert_eq!(
        sample(&first, "treffpunkt_refusals_total{code=\"room-not-found\"}"),
        1.0
    );
    // Carla's socket closes a moment after her refusal.
    let mut open = sample(&first, "treffpunkt_connections");
    for _ in 0..50 {
        if open == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        open = sample(&scrape().await, "treffpunkt_connections");
    }
    assert_eq!(open, 2.0, "Anna's and Ben's connections are open");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = scrape().await;
    assert_eq!(
        sample(&second, "treffpunkt_node_sessions{node=\"standalone\"}"),
        2.0,
        "{second}"
    );
    assert_eq!(
        sample(&second, "treffpunkt_node_rooms{node=\"standalone\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &second,
            "treffpunkt_node_published_tracks{node=\"standalone\"}"
        ),
        4.0
    );
    let sent = |text: &str| {
        sample(
            text,
            "treffpunkt_node_packets_total{node=\"standalone\",direction=\"out\"}",
        )
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let third = scrape().await;
    assert!(
        sent(&third) > sent(&second) && sent(&second) > 0.0,
        "forwarded packets rise"
    );
    assert!(
        sample(
            &third,
            "treffpunkt_node_cpu_seconds_total{node=\"standalone\"}"
        ) > 0.0
    );
    assert!(
        sample(
            &third,
            "treffpunkt_node_downlink_estimate_min_bits{node=\"standalone\"}",
        ) > 0.0
    );
    // Nothing in them names a person or a room.
    for word in ["Anna", "Ben", "zaehlung", "niemand"] {
        assert!(!third.contains(word), "{word} in the metrics");
    }
    assert!(third.ends_with("# EOF\n") && third.matches("# EOF").count() == 1);
    anna.leave().await;
    ben.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_of_one_process_take_rooms_of_their_own_and_span_a_room_that_outgrows_one() {
    let metrics = SocketAddr::new(LOOPBACK, support::free_port());
    // Two media nodes in the process, two participants each.
    let server = support::calls::on_loopback(StandaloneConfig {
        metrics: Some(metrics),
        max_participants: 4,
        media_shards: 2,
        ..StandaloneConfig::default()
    })
    .await;
    assert_eq!(server.fleet.nodes().len(), 2, "both shards attached");
    assert_eq!(server.shards.len(), 2);
    assert_ne!(server.shards[0].udp.port(), server.shards[1].udp.port());
    let (first, second) = (NodeId("standalone".into()), NodeId("standalone-2".into()));
    let participants = |node: &NodeId| server.fleet.load(node).map(|load| load.participants);
    let verein = signal_url(server.http, "public", "verein");
    let (anna, ben) = support::calls::anna_and_ben(&verein).await;
    // Whichever shard took the first room, the second room goes to the other one.
    let hosted = wait_until(Duration::from_secs(5), || {
        [&first, &second]
            .iter()
            .any(|node| participants(node) == Some(2))
    });
    assert!(hosted.await, "one shard hosts the first room");
    let (busy, other) = match participants(&first) {
        Some(2) => (first, second),
        _ => (second, first),
    };
    assert_eq!(
        participants(&busy),
        Some(2),
        "one shard hosts the first room"
    );
    let publish = Some(Publish::default());
    let dora_url = signal_url(server.http, "public", "nebenan");
    let dora = Participant::join(&dora_url, "Dora", publish.clone())
        .await
        .expect("Dora joins");
    assert!(
        wait_until(Duration::from_secs(5), || participants(&other) == Some(1)).await,
        "the second room goes to the other shard: {:?}",
        server.fleet.load(&other)
    );
    // The first room's shard is full: Cem joins it on the other one, and the room spans both.
    let cem = Participant::join(&verein, "Cem", publish)
        .await
        .expect("Cem joins on the other shard");
    assert!(
        all_receive_each_other([&anna, &ben, &cem]).await,
        "each receives the other two's audio and video across the shards"
    );
    assert!(
        wait_until(Duration::from_secs(5), || participants(&other) == Some(2)).await,
        "Cem and Dora on one shard: {:?}",
        server.fleet.load(&other)
    );
    assert!(!receives_from(&dora, &[&anna], 1), "Dora's room is her own");

    // One document of metrics, each shard's series named by their node, each with its own
    // CPU time (its thread's).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, text) = support::http(metrics, "GET", "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let series = |name: &str, node: &NodeId, rest: &str| {
        sample(
            &text,
            &format!("treffpunkt_node_{name}{{node=\"{}\"{rest}}}", node.0),
        )
    };
    for node in [&busy, &other] {
        assert_eq!(series("sessions", node, ""), 2.0, "{text}");
        assert!(series("cpu_seconds_total", node, "") > 0.0, "{text}");
    }
    assert!(series("relayed_packets_total", &busy, ",direction=\"out\"") > 0.0);
    assert!(series("relayed_packets_total", &other, ",direction=\"in\"") > 0.0);
    assert_eq!(text.matches("# TYPE treffpunkt_node_sessions ").count(), 1);
    for participant in [anna, ben, cem, dora] {
        participant.leave().await;
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_participant_limit_refuses_the_next_person_in_any_room() {
    let mut verein = Tenant::public();
    verein.name = treffpunkt_operator::domain::TenantName::new("verein").unwrap();
    verein.limits.max_participants = 2;
    let server = support::calls::on_loopback(StandaloneConfig {
        tenants: vec![verein],
        ..StandaloneConfig::default()
    })
    .await;
    let (anna, ben) =
        support::calls::anna_and_ben(&signal_url(server.http, "verein", "chor")).await;
    let elsewhere = signal_url(server.http, "verein", "vorstand");
    let refused = Participant::join(&elsewhere, "Carla", None).await;
    let error = refused
        .err()
        .expect("a third person is refused")
        .to_string();
    assert!(error.contains("tenant-full"), "{error}");
    // The public space has limits of its own.
    let public = signal_url(server.http, "public", "chor");
    let dora = Participant::join(&public, "Dora", None)
        .await
        .expect("Dora joins");
    // Once someone leaves, the next one gets in.
    ben.leave().await;
    let joined = support::eventually(Duration::from_secs(10), || async {
        Participant::join(&elsewhere, "Carla", None).await.ok()
    })
    .await;
    assert!(joined.is_some(), "Carla gets in after Ben left");
    anna.leave().await;
    dora.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_an_earlier_release_hears_of_newcomers_one_at_a_time() {
    // The node is played by the test over a real Attach stream, so that it says "two came at
    // once" when the test wants it to; the gateway, the fleet and the WebSockets are real.
    use futures::StreamExt;
    use support::sockets::next_reply;
    use treffpunkt_proto::features::Features;
    use treffpunkt_proto::v1::{self, control_message::Kind as ControlKind};
    let key = Keyring::from_secret(GRANT_SECRET);
    let server = support::calls::on_loopback(StandaloneConfig {
        media_node: false,
        grant_key: Some(SharedKeyring::new(key.clone())),
        ..StandaloneConfig::default()
    })
    .await;
    let mut node = register_as(server.grpc, "node-a", Some(&key)).await;
    let commands = node.answer.as_mut().expect("the node attaches");
    let Some(Ok(v1::ControlMessage {
        kind: Some(ControlKind::Registered(registered)),
    })) = commands.next().await
    else {
        panic!("the control plane answers the registration");
    };
    assert_eq!(Features::from_names(&registered.features), Features::ALL);

    let url = signal_url(server.http, "public", "umbau");
    let mut told = Vec::new();
    // A page loaded before the upgrade names no features; one of this release names them.
    for features in [serde_json::json!([]), serde_json::json!(["roster-batches"])] {
        let mut page = join_page(&url, "Alma", features).await;
        let session_id = loop {
            let command = tokio::time::timeout(Duration::from_secs(5), commands.next()).await;
            match command {
                Ok(Some(Ok(v1::ControlMessage {
                    kind: Some(ControlKind::OpenSession(open)),
                }))) => break open.session_id,
                Ok(Some(Ok(_))) => {}
                other => panic!("the node is asked to open Alma's session: {other:?}"),
            }
        };
        let person = |name: &str| v1::Participant {
            participant_id: name.to_lowercase(),
            display_name: name.into(),
            media: None,
            moderator: false,
        };
        let together = v1::signal::Kind::ParticipantsJoined(v1::ParticipantsJoined {
            participants: vec![person("Cem"), person("Dora")],
        });
        let signal = v1::node_message::Kind::Signal(v1::SessionSignal {
            session_id,
            signal: Some(v1::Signal::new(together)),
        });
        node.to_control_plane
            .send(v1::NodeMessage::new(signal))
            .await
            .expect("the Attach stream is open");
        // How many newcomers each message named, until both were named.
        let mut messages = Vec::new();
        while messages.iter().sum::<usize>() < 2 {
            let reply = next_reply(&mut page).await.expect("the page hears of them");
            match reply["type"].as_str() {
                Some("participant-joined") => messages.push(1),
                Some("participants-joined") => messages.push(
                    reply["participants"]
                        .as_array()
                        .map_or(0, |participants| participants.len()),
                ),
                _ => {}
            }
        }
        told.push(messages);
    }
    assert_eq!(
        told,
        [vec![1, 1], vec![2]],
        "the earlier page hears of each alone, the newer of both at once"
    );
}

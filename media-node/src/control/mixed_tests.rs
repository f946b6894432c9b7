//! A fleet in the middle of an upgrade: the node, attached over a real Attach stream to a
//! replica the test plays, speaks the newer forms only to a replica and a link's other node
//! that named them.

use std::net::{Ipv4Addr, SocketAddr};

use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use treffpunkt_proto::v1::control_plane_server::{ControlPlane, ControlPlaneServer};

use super::forms::tests::info;
use super::*;
use crate::core::{LinkId, RelayMessage};
use crate::node::signal;

const LINK: u64 = 9;

/// A replica that names `features` when the node registers, then opens a link to a node that
/// names `peer_features` and sends a signal of session `s1`; everything the node sends is handed
/// to the test.
struct Replica {
    features: Features,
    peer_features: Features,
    heard: mpsc::Sender<v1::NodeMessage>,
}

#[tonic::async_trait]
impl ControlPlane for Replica {
    type AttachStream = ReceiverStream<std::result::Result<v1::ControlMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<v1::NodeMessage>>,
    ) -> std::result::Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let (to_node, stream) = mpsc::channel(16);
        let registered = ControlKind::Registered(v1::Registered {
            load_report_interval_ms: 1_000,
            replica: "replica-1".into(),
            features: self.features.names(),
        });
        let open = ControlKind::OpenLink(v1::OpenLink {
            link_id: LINK,
            room: "club/board".into(),
            address: Some(v1::MediaAddress {
                protocol: v1::TransportProtocol::Udp as i32,
                ip: "127.0.0.1".into(),
                port: 9,
            }),
            key: vec![1; 32],
            first: true,
            peer_node: "node-b".into(),
            peer_features: self.peer_features.names(),
        });
        // The replica learns of the session by its client's signal, as after a resume.
        let signal = ControlKind::Signal(v1::SessionSignal {
            session_id: "s1".into(),
            signal: Some(v1::Signal::error("x", "y")),
        });
        for kind in [registered, open, signal] {
            let _ = to_node.send(Ok(v1::ControlMessage::new(kind))).await;
        }
        let heard = self.heard.clone();
        tokio::spawn(async move {
            // Held until the node hangs up, so that the stream to it stays open.
            let _to_node = to_node;
            while let Ok(Some(message)) = inbound.message().await {
                if heard.send(message).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// What a replica naming `features`, with a link to a node naming `peer_features`, hears from
/// the node after it says that two participants came at once, to session `s1` and to the link:
/// its registration first.
async fn heard_with(features: Features, peer_features: Features) -> Vec<v1::NodeMessage> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("a port on loopback");
    let address = listener.local_addr().expect("the listener's address");
    let (heard, mut hearing) = mpsc::channel(64);
    let replica = Replica {
        features,
        peer_features,
        heard,
    };
    let server = AbortOnDrop(tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ControlPlaneServer::new(replica))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    ));
    let key = Keyring::from_secret(b"a shared secret of enough length!");
    let identity = Identity {
        node_id: "node-a".into(),
        instance_id: "1".into(),
        pool: String::new(),
        max_participants: 10,
        media_addresses: Vec::new(),
        certificate: None,
    };
    let (commands, mut commanded) = mpsc::channel(16);
    let (events, node_events) = mpsc::channel(16);
    let node = AbortOnDrop(tokio::spawn(run(
        vec![format!("http://{address}")],
        identity,
        SharedKeyring::new(key),
        commands,
        node_events,
        NodeStatus::default(),
    )));
    let wait = Duration::from_secs(10);
    // Once the node passed on the session's signal, it knows the link and the session's replica.
    let mut opened = false;
    loop {
        match tokio::time::timeout(wait, commanded.recv()).await {
            Ok(Some(Command::OpenLink(spec))) => opened = spec.link == LinkId(LINK),
            Ok(Some(Command::Signal { .. })) => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the node did not pass on the replica's commands"),
        }
    }
    assert!(opened, "the node opened the link first");
    let person = |id: &str| signal::participant(info(id));
    let together = v1::Signal::new(v1::signal::Kind::ParticipantsJoined(
        v1::ParticipantsJoined {
            participants: vec![person("a"), person("b")],
        },
    ));
    let roster = RelayMessage::Participants(vec![(1, info("a")), (2, info("b"))]);
    let said = [
        Event::Signal {
            session_id: "s1".into(),
            signal: together,
        },
        Event::Relay {
            link: LinkId(LINK),
            room: "club/board".into(),
            to_node: "node-b".into(),
            message: roster,
        },
    ];
    for event in said {
        events.send(event).await.expect("the control link runs");
    }
    let mut messages = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), hearing.recv()).await
    {
        messages.push(message);
    }
    drop((node, server));
    messages
}

/// How the replica heard of the newcomers: `(signals, relays)`, each the number of
/// participants per message.
fn forms(messages: &[v1::NodeMessage]) -> (Vec<usize>, Vec<usize>) {
    use v1::room_relay::Kind as RelayKind;
    use v1::signal::Kind as SignalKind;
    let (mut signals, mut relays) = (Vec::new(), Vec::new());
    for message in messages {
        match &message.kind {
            Some(NodeKind::Signal(v1::SessionSignal {
                signal: Some(signal),
                ..
            })) => match &signal.kind {
                Some(SignalKind::ParticipantJoined(_)) => signals.push(1),
                Some(SignalKind::ParticipantsJoined(joined)) => {
                    signals.push(joined.participants.len());
                }
                other => panic!("an unexpected signal: {other:?}"),
            },
            Some(NodeKind::Relay(relay)) => match &relay.kind {
                Some(RelayKind::Participant(_)) => relays.push(1),
                Some(RelayKind::Participants(roster)) => relays.push(roster.participants.len()),
                other => panic!("an unexpected relay: {other:?}"),
            },
            _ => {}
        }
    }
    (signals, relays)
}

#[tokio::test]
async fn the_newer_forms_go_only_where_they_are_understood() {
    let messages = heard_with(Features::ALL, Features::ALL).await;
    let Some(NodeKind::Register(register)) = &messages.first().and_then(|m| m.kind.clone()) else {
        panic!("the node registers first");
    };
    assert_eq!(
        Features::from_names(&register.features),
        Features::ALL,
        "the node names what it understands"
    );
    assert_eq!(
        forms(&messages),
        (vec![2], vec![2]),
        "a replica and a node of this release hear of both at once"
    );

    let messages = heard_with(Features::default(), Features::default()).await;
    assert_eq!(
        forms(&messages),
        (vec![1, 1], vec![1, 1]),
        "a replica and a node of an earlier release hear of each alone"
    );

    let messages = heard_with(Features::ALL, Features::default()).await;
    assert_eq!(
        forms(&messages),
        (vec![2], vec![1, 1]),
        "the session's replica and the link's other node are told each in their form"
    );
}

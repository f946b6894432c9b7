//! The messages of spanning rooms between the core's words and `treffpunkt.v1`: links opened
//! and closed by the control plane, and the [`RelayMessage`]s it carries between two nodes.
//! What another node sends is checked here as any input from outside: a message that does not
//! parse is dropped with the reason.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use treffpunkt_proto::v1::{self, room_relay::Kind};

use crate::core::{
    ChatMessage, Codec, Ending, LeaveReason, LinkId, MAX_PARTICIPANTS_TOGETHER, MAX_WAITING,
    ParticipantInfo, RelayMessage, Source,
};
use crate::node::LinkSpec;
use crate::node::signal;

/// The most layers a relayed track may name.
const MAX_LAYERS: usize = 8;
/// The longest display name a relayed lobby may carry: the control plane's limit.
const MAX_NAME_CHARS: usize = 64;
/// The longest participant id a relayed lobby may carry (the control plane gives 16 hex digits).
const MAX_ID_BYTES: usize = 128;

/// The link an `OpenLink` opens.
pub fn link_spec(open: v1::OpenLink) -> Result<LinkSpec, &'static str> {
    let address = open.address.ok_or("a link without an address")?;
    let ip: IpAddr = address
        .ip
        .parse()
        .map_err(|_| "a link's address is no IP")?;
    let port = u16::try_from(address.port).map_err(|_| "a link's port is out of range")?;
    let key: [u8; 32] = open
        .key
        .as_slice()
        .try_into()
        .map_err(|_| "a link's key is not 32 bytes")?;
    if open.room.is_empty() {
        return Err("a link without a room");
    }
    if open.peer_node.is_empty() {
        return Err("a link without its other node");
    }
    Ok(LinkSpec {
        link: LinkId(open.link_id),
        room: open.room,
        address: SocketAddr::new(ip, port),
        key,
        first: open.first,
        peer_node: open.peer_node,
    })
}

/// The wire form of a message for the other end of `link`.
pub fn to_wire(link: LinkId, message: RelayMessage) -> v1::RoomRelay {
    let kind = match message {
        RelayMessage::Hello { nonce } => Kind::Hello(nonce.to_vec()),
        RelayMessage::Participant { peer, info } => {
            Kind::Participant(relay_participant(peer, info))
        }
        RelayMessage::Participants(together) => Kind::Participants(v1::RelayParticipants {
            participants: together
                .into_iter()
                .map(|(peer, info)| relay_participant(peer, info))
                .collect(),
        }),
        RelayMessage::Left { peer, reason } => Kind::Left(v1::RelayLeft {
            peer,
            connection_lost: reason == LeaveReason::ConnectionLost,
        }),
        RelayMessage::Publication {
            peer,
            track,
            codec,
            source,
            ssrcs,
        } => Kind::Publication(v1::RelayPublication {
            peer,
            track,
            codec: codec.mime().to_owned(),
            source: source.as_str().to_owned(),
            ssrcs: ssrcs.into_iter().map(|ssrc| ssrc.unwrap_or(0)).collect(),
        }),
        RelayMessage::Unpublished { peer, track } => {
            Kind::Unpublished(v1::RelayTrack { peer, track })
        }
        RelayMessage::Chat(message) => Kind::Chat(v1::ChatMessage {
            participant_id: message.from,
            display_name: message.display_name,
            text: message.text,
        }),
        RelayMessage::Keyframe { peer, ssrc } => Kind::Keyframe(v1::RelayKeyframe { peer, ssrc }),
        RelayMessage::Layers {
            peer,
            source,
            wanted,
        } => Kind::Layers(v1::RelayLayers {
            peer,
            source: source.as_str().to_owned(),
            wanted,
        }),
        RelayMessage::Request { peer, request } => Kind::Request(v1::RelayRequest {
            peer,
            request: Some(signal::request_kind(request)),
        }),
        RelayMessage::MadeModerator { peer } => Kind::MadeModerator(v1::RelayPeer { peer }),
        RelayMessage::Locked(locked) => Kind::Locked(locked),
        RelayMessage::Hand { peer, raised } => Kind::Hand(v1::RelayHand { peer, raised }),
        RelayMessage::LowerHand { peer } => Kind::LowerHand(v1::RelayPeer { peer }),
        RelayMessage::Close { peer, reason } => Kind::Close(v1::RelayClose {
            peer,
            reason: match reason {
                Ending::Removed => "removed",
                Ending::Ended => "ended",
                Ending::Denied => "denied",
            }
            .to_owned(),
        }),
        RelayMessage::Lobby { waiting } => Kind::Lobby(v1::RelayLobby {
            waiting: waiting
                .into_iter()
                .map(|(participant_id, display_name)| v1::RelayWaiting {
                    participant_id,
                    display_name,
                })
                .collect(),
        }),
        RelayMessage::Admit {
            participant_id,
            admit,
        } => Kind::Admit(v1::RelayAdmit {
            participant_id,
            admit,
        }),
    };
    v1::RoomRelay {
        link_id: link.0,
        kind: Some(kind),
        ..Default::default()
    }
}

fn relay_participant(peer: u64, info: ParticipantInfo) -> v1::RelayParticipant {
    v1::RelayParticipant {
        peer,
        info: Some(signal::participant(info)),
    }
}

fn participant_from_wire(
    participant: v1::RelayParticipant,
) -> Result<(u64, ParticipantInfo), &'static str> {
    let info = participant.info.ok_or("a participant without its state")?;
    let media = info.media.unwrap_or_default();
    let info = ParticipantInfo {
        participant_id: info.participant_id,
        display_name: info.display_name,
        audio_muted: media.audio_muted,
        video_muted: media.video_muted,
        screen_sharing: media.screen_sharing,
        moderator: info.moderator,
    };
    Ok((participant.peer, info))
}

/// The link and message of a `RoomRelay` from another node.
pub fn from_wire(relay: v1::RoomRelay) -> Result<(LinkId, RelayMessage), &'static str> {
    let link = LinkId(relay.link_id);
    let message = match relay.kind.ok_or("an empty relay message")? {
        Kind::Hello(nonce) => RelayMessage::Hello {
            nonce: nonce
                .as_slice()
                .try_into()
                .map_err(|_| "a link's random bytes are not 16")?,
        },
        Kind::Participant(participant) => {
            let (peer, info) = participant_from_wire(participant)?;
            RelayMessage::Participant { peer, info }
        }
        Kind::Participants(together) => {
            if together.participants.len() > MAX_PARTICIPANTS_TOGETHER {
                return Err("a relayed roster names too many participants at once");
            }
            let together: Vec<(u64, ParticipantInfo)> = (together.participants.into_iter())
                .map(participant_from_wire)
                .collect::<Result<_, _>>()?;
            let (mut peers, mut ids) = (HashSet::new(), HashSet::new());
            if !(together.iter())
                .all(|(peer, info)| peers.insert(*peer) && ids.insert(&info.participant_id))
            {
                return Err("a relayed roster names someone twice");
            }
            RelayMessage::Participants(together)
        }
        Kind::Left(left) => RelayMessage::Left {
            peer: left.peer,
            reason: if left.connection_lost {
                LeaveReason::ConnectionLost
            } else {
                LeaveReason::Left
            },
        },
        Kind::Publication(publication) => {
            if publication.ssrcs.is_empty() || publication.ssrcs.len() > MAX_LAYERS {
                return Err("a relayed track's layers are out of range");
            }
            RelayMessage::Publication {
                peer: publication.peer,
                track: publication.track,
                codec: Codec::from_mime(&publication.codec).ok_or("a relayed track's codec")?,
                source: Source::parse(&publication.source).ok_or("a relayed track's source")?,
                ssrcs: publication
                    .ssrcs
                    .into_iter()
                    .map(|ssrc| (ssrc != 0).then_some(ssrc))
                    .collect(),
            }
        }
        Kind::Unpublished(track) => RelayMessage::Unpublished {
            peer: track.peer,
            track: track.track,
        },
        Kind::Chat(chat) => {
            if chat.text.chars().count() > crate::core::MAX_CHAT_CHARS {
                return Err("a relayed chat message is too long");
            }
            RelayMessage::Chat(ChatMessage {
                from: chat.participant_id,
                display_name: chat.display_name,
                text: chat.text,
            })
        }
        Kind::Keyframe(keyframe) => RelayMessage::Keyframe {
            peer: keyframe.peer,
            ssrc: keyframe.ssrc,
        },
        Kind::Layers(layers) => {
            if layers.wanted.len() > MAX_LAYERS {
                return Err("a relayed layer choice is out of range");
            }
            RelayMessage::Layers {
                peer: layers.peer,
                source: Source::parse(&layers.source).ok_or("a relayed layer choice's source")?,
                wanted: layers.wanted,
            }
        }
        Kind::Request(request) => RelayMessage::Request {
            peer: request.peer,
            request: request
                .request
                .and_then(|request| signal::moderator_request(request.kind()))
                .ok_or("a relayed request of no known kind")?,
        },
        Kind::MadeModerator(peer) => RelayMessage::MadeModerator { peer: peer.peer },
        Kind::Locked(locked) => RelayMessage::Locked(locked),
        Kind::Hand(hand) => RelayMessage::Hand {
            peer: hand.peer,
            raised: hand.raised,
        },
        Kind::LowerHand(peer) => RelayMessage::LowerHand { peer: peer.peer },
        Kind::Close(close) => RelayMessage::Close {
            peer: close.peer,
            reason: match close.reason.as_str() {
                "removed" => Ending::Removed,
                "ended" => Ending::Ended,
                "denied" => Ending::Denied,
                _ => return Err("a relayed ending of no known reason"),
            },
        },
        Kind::Lobby(lobby) => lobby_from_wire(lobby)?,
        Kind::Admit(admit) => RelayMessage::Admit {
            participant_id: admit.participant_id,
            admit: admit.admit,
        },
    };
    Ok((link, message))
}

/// Who waits in the other node's lobby, if the list is one that a lobby can have.
fn lobby_from_wire(lobby: v1::RelayLobby) -> Result<RelayMessage, &'static str> {
    if lobby.waiting.len() > MAX_WAITING {
        return Err("a relayed lobby is longer than a lobby may be");
    }
    let too_long = |waiting: &v1::RelayWaiting| {
        waiting.participant_id.len() > MAX_ID_BYTES
            || waiting.display_name.chars().count() > MAX_NAME_CHARS
    };
    if lobby.waiting.iter().any(too_long) {
        return Err("a relayed lobby names someone at too great a length");
    }
    Ok(RelayMessage::Lobby {
        waiting: lobby
            .waiting
            .into_iter()
            .map(|waiting| (waiting.participant_id, waiting.display_name))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ModeratorRequest;

    #[test]
    fn every_relay_message_survives_the_wire() {
        let info = ParticipantInfo {
            participant_id: "p-1".into(),
            display_name: "Anna".into(),
            audio_muted: true,
            video_muted: false,
            screen_sharing: true,
            moderator: true,
        };
        let messages = [
            RelayMessage::Hello { nonce: [7; 16] },
            RelayMessage::Participant {
                peer: 3,
                info: info.clone(),
            },
            RelayMessage::Participants(vec![
                (3, info.clone()),
                (
                    4,
                    ParticipantInfo {
                        participant_id: "p-2".into(),
                        display_name: "Ben".into(),
                        ..info
                    },
                ),
            ]),
            RelayMessage::Left {
                peer: 3,
                reason: LeaveReason::ConnectionLost,
            },
            RelayMessage::Publication {
                peer: 3,
                track: 9,
                codec: Codec::Vp8,
                source: Source::Camera,
                ssrcs: vec![Some(11), None, Some(13)],
            },
            RelayMessage::Unpublished { peer: 3, track: 9 },
            RelayMessage::Chat(ChatMessage {
                from: "p-1".into(),
                display_name: "Anna".into(),
                text: "Hallo".into(),
            }),
            RelayMessage::Keyframe { peer: 3, ssrc: 11 },
            RelayMessage::Layers {
                peer: 3,
                source: Source::Screen,
                wanted: vec![true, false],
            },
            RelayMessage::Request {
                peer: 3,
                request: ModeratorRequest::CameraStopped,
            },
            RelayMessage::MadeModerator { peer: 3 },
            RelayMessage::Locked(true),
            RelayMessage::Hand {
                peer: 3,
                raised: true,
            },
            RelayMessage::LowerHand { peer: 3 },
            RelayMessage::Close {
                peer: 3,
                reason: Ending::Removed,
            },
            RelayMessage::Lobby {
                waiting: vec![("p-2".into(), "Ben".into()), ("p-4".into(), "Dora".into())],
            },
            RelayMessage::Admit {
                participant_id: "p-2".into(),
                admit: true,
            },
        ];
        for message in messages {
            let wire = to_wire(LinkId(5), message.clone());
            assert_eq!(from_wire(wire), Ok((LinkId(5), message)));
        }
    }

    #[test]
    fn malformed_relay_messages_and_links_are_refused() {
        let publication = |ssrcs: Vec<u32>, codec: &str| v1::RoomRelay {
            link_id: 1,
            kind: Some(Kind::Publication(v1::RelayPublication {
                peer: 1,
                track: 1,
                codec: codec.into(),
                source: "camera".into(),
                ssrcs,
            })),
            ..Default::default()
        };
        assert!(from_wire(publication(vec![], "video/VP8")).is_err());
        assert!(from_wire(publication(vec![1; 100], "video/VP8")).is_err());
        assert!(from_wire(publication(vec![1], "video/AV2")).is_err());
        assert!(from_wire(v1::RoomRelay::default()).is_err());
        let lobby = |count: usize, name: &str| v1::RoomRelay {
            link_id: 1,
            kind: Some(Kind::Lobby(v1::RelayLobby {
                waiting: vec![
                    v1::RelayWaiting {
                        participant_id: "p-1".into(),
                        display_name: name.into(),
                    };
                    count
                ],
            })),
            ..Default::default()
        };
        let roster = |participants: Vec<(u64, Option<&str>)>| v1::RoomRelay {
            link_id: 1,
            kind: Some(Kind::Participants(v1::RelayParticipants {
                participants: (participants.into_iter())
                    .map(|(peer, id)| v1::RelayParticipant {
                        peer,
                        info: id.map(|id| v1::Participant {
                            participant_id: id.into(),
                            ..Default::default()
                        }),
                    })
                    .collect(),
            })),
            ..Default::default()
        };
        let names: Vec<String> = (0..=MAX_PARTICIPANTS_TOGETHER)
            .map(|i| format!("p{i}"))
            .collect();
        let everyone = |count: usize| {
            roster(
                (names.iter().take(count).enumerate())
                    .map(|(peer, id)| (peer as u64, Some(id.as_str())))
                    .collect(),
            )
        };
        assert!(from_wire(everyone(MAX_PARTICIPANTS_TOGETHER)).is_ok());
        assert!(from_wire(everyone(MAX_PARTICIPANTS_TOGETHER + 1)).is_err());
        assert!(from_wire(roster(vec![(1, Some("p1")), (2, None)])).is_err());
        // The same participant twice would be shown twice, and only once shown leaving.
        assert!(from_wire(roster(vec![(1, Some("p1")), (2, Some("p1"))])).is_err());
        assert!(from_wire(roster(vec![(1, Some("p1")), (1, Some("p2"))])).is_err());
        assert!(from_wire(lobby(MAX_WAITING, "Anna")).is_ok());
        assert!(from_wire(lobby(MAX_WAITING + 1, "Anna")).is_err());
        assert!(from_wire(lobby(1, &"A".repeat(65))).is_err());
        let open = |key: Vec<u8>, ip: &str| v1::OpenLink {
            link_id: 1,
            room: "club/board".into(),
            address: Some(v1::MediaAddress {
                protocol: v1::TransportProtocol::Udp as i32,
                ip: ip.into(),
                port: 10_000,
            }),
            key,
            first: true,
            peer_node: "node-b".into(),
            peer_features: Vec::new(),
        };
        assert!(link_spec(open(vec![7; 32], "10.0.0.2")).is_ok());
        assert!(link_spec(open(vec![7; 16], "10.0.0.2")).is_err());
        assert!(link_spec(open(vec![7; 32], "nowhere")).is_err());
    }
}

//! The protocol's wire format, pinned byte for byte: the browser client speaks it too.

use std::collections::HashMap;

use super::*;
use crate::v1::{self, signal::Kind};

#[test]
fn client_messages_parse_and_unknown_ones_are_refused() {
    let join: ClientMessage = serde_json::from_str(r#"{"type":"join","name":"Anna"}"#).unwrap();
    assert_eq!(
        join,
        ClientMessage::Join {
            name: "Anna".into(),
            audio_muted: false,
            video_muted: false,
            password: None,
            invite: None,
            features: vec![],
        }
    );
    for bad in [
        r#"{"type":"hack"}"#,
        r#"{"type":"offer"}"#,
        r#"{"type":"offer","sdp":1}"#,
        r#"[1,2,3]"#,
        "not json",
    ] {
        assert!(
            serde_json::from_str::<ClientMessage>(bad).is_err(),
            "{bad} must be refused"
        );
    }
}

#[test]
fn oversized_messages_are_not_relayed() {
    let huge = ClientMessage::Offer {
        sdp: "a".repeat(MAX_SDP_BYTES + 1),
        sources: HashMap::new(),
    };
    assert_eq!(to_signal(huge), Err(RelayError::SdpTooLarge));
    let chat = ClientMessage::Chat {
        text: "a".repeat(MAX_CHAT_BYTES + 1),
    };
    assert_eq!(to_signal(chat), Err(RelayError::ChatTooLarge));
    let viewports: ClientMessage = serde_json::from_value(serde_json::json!({
        "type": "viewports",
        "viewports": (0..=MAX_LIST_ENTRIES).map(|i| serde_json::json!({"streamId": format!("p{i}"), "height": 10})).collect::<Vec<_>>(),
    }))
    .unwrap();
    assert_eq!(to_signal(viewports), Err(RelayError::TooMany));
}

#[test]
fn the_new_call_messages_round_trip() {
    let offer: ClientMessage = serde_json::from_str(
        r#"{"type":"offer","sdp":"v=0","sources":{"0":"microphone","1":"camera","2":"screen"}}"#,
    )
    .unwrap();
    let Some(Kind::Offer(offer)) = to_signal(offer).unwrap().kind else {
        panic!("an offer");
    };
    assert_eq!(offer.sources.get("2").map(String::as_str), Some("screen"));
    let settings: ClientMessage =
        serde_json::from_str(r#"{"type":"receive-settings","audioOnly":true}"#).unwrap();
    assert_eq!(
        to_signal(settings).unwrap().kind,
        Some(Kind::ReceiveSettings(v1::ReceiveSettings {
            audio_only: true
        }))
    );
    let paused = from_signal(v1::Signal::new(Kind::VideoState(v1::VideoState {
        stream_id: "p1".into(),
        state: v1::video_state::State::PausedBandwidth as i32,
    })))
    .unwrap();
    assert_eq!(
        serde_json::to_string(&paused).unwrap(),
        r#"{"type":"video-state","streamId":"p1","state":"paused-bandwidth"}"#
    );
    let chat = from_signal(v1::Signal::new(Kind::Chat(v1::ChatMessage {
        participant_id: "p2".into(),
        display_name: "Ben".into(),
        text: "Hallo".into(),
    })))
    .unwrap();
    assert_eq!(
        serde_json::to_string(&chat).unwrap(),
        r#"{"type":"chat","participantId":"p2","name":"Ben","text":"Hallo"}"#
    );
    let together = |name: &str| v1::Participant {
        participant_id: name.to_lowercase(),
        display_name: name.into(),
        media: None,
        moderator: false,
    };
    let joined = from_signal(v1::Signal::new(Kind::ParticipantsJoined(
        v1::ParticipantsJoined {
            participants: vec![together("Cem"), together("Dora")],
        },
    )))
    .expect("participants-joined is a message for the browser");
    let ServerMessage::ParticipantsJoined { participants } = joined else {
        panic!("several joined, told as one message");
    };
    let names: Vec<&str> = participants.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Cem", "Dora"]);

    // A page that does not name the feature (loaded before an upgrade) hears of each alone.
    let together = ServerMessage::ParticipantsJoined { participants };
    let batches = crate::features::Features::ALL;
    assert_eq!(
        for_client(together.clone(), batches).collect::<Vec<_>>(),
        std::slice::from_ref(&together)
    );
    let singles: Vec<ServerMessage> =
        for_client(together, crate::features::Features::default()).collect();
    let names: Vec<&str> = singles
        .iter()
        .map(|message| match message {
            ServerMessage::ParticipantJoined { participant } => participant.name.as_str(),
            other => panic!("one participant-joined each, not {other:?}"),
        })
        .collect();
    assert_eq!(names, ["Cem", "Dora"]);
    let chat = ServerMessage::Chat {
        participant_id: "p2".into(),
        name: "Ben".into(),
        text: "Hallo".into(),
    };
    assert_eq!(
        for_client(chat.clone(), crate::features::Features::default()).collect::<Vec<_>>(),
        [chat]
    );
}

#[test]
fn server_messages_have_the_documented_shape() {
    let message = ServerMessage::ParticipantLeft {
        participant_id: "p1".into(),
        reason: CloseReason::Left,
    };
    assert_eq!(
        serde_json::to_string(&message).unwrap(),
        r#"{"type":"participant-left","participantId":"p1","reason":"left"}"#
    );
}

/// Every server message, with the JSON the browser client expects for it.
fn every_server_message() -> Vec<(ServerMessage, &'static str)> {
    let anna = ParticipantInfo {
        id: "p1".into(),
        name: "Anna".into(),
        audio_muted: true,
        video_muted: false,
        screen_sharing: false,
        moderator: true,
    };
    vec![
        (
            ServerMessage::Welcome {
                participant_id: "p1".into(),
                participants: vec![anna.clone()],
                resumed: false,
                moderator: false,
                locked: true,
                hands: vec!["p1".into()],
            },
            r#"{"type":"welcome","participantId":"p1","participants":[{"id":"p1","name":"Anna","audioMuted":true,"videoMuted":false,"screenSharing":false,"moderator":true}],"resumed":false,"moderator":false,"locked":true,"hands":["p1"]}"#,
        ),
        (
            ServerMessage::Session {
                ticket: "t.s".into(),
                ice_servers: Vec::new(),
                room_title: None,
            },
            r#"{"type":"session","ticket":"t.s"}"#,
        ),
        (
            ServerMessage::Session {
                ticket: "t.s".into(),
                ice_servers: Vec::new(),
                room_title: Some("Vorstandssitzung".into()),
            },
            r#"{"type":"session","ticket":"t.s","roomTitle":"Vorstandssitzung"}"#,
        ),
        (
            ServerMessage::Session {
                ticket: "t.s".into(),
                ice_servers: vec![IceServer {
                    urls: vec!["turns:turn.example:443?transport=tcp".into()],
                    username: "1700000000:ab12".into(),
                    credential: "c2VjcmV0".into(),
                }],
                room_title: None,
            },
            r#"{"type":"session","ticket":"t.s","iceServers":[{"urls":["turns:turn.example:443?transport=tcp"],"username":"1700000000:ab12","credential":"c2VjcmV0"}]}"#,
        ),
        (ServerMessage::Reconnect, r#"{"type":"reconnect"}"#),
        (
            ServerMessage::Offer { sdp: "v=0".into() },
            r#"{"type":"offer","sdp":"v=0"}"#,
        ),
        (
            ServerMessage::Answer { sdp: "v=0".into() },
            r#"{"type":"answer","sdp":"v=0"}"#,
        ),
        (
            ServerMessage::Candidate {
                candidate: "candidate:1".into(),
                sdp_mid: "0".into(),
                sdp_m_line_index: 0,
            },
            r#"{"type":"candidate","candidate":"candidate:1","sdpMid":"0","sdpMLineIndex":0}"#,
        ),
        (
            ServerMessage::PublishLayers {
                source: "camera".into(),
                active: vec![true, false, true],
            },
            r#"{"type":"publish-layers","source":"camera","active":[true,false,true]}"#,
        ),
        (
            ServerMessage::VideoState {
                stream_id: "p1".into(),
                state: VideoState::PausedLastN,
            },
            r#"{"type":"video-state","streamId":"p1","state":"paused-last-n"}"#,
        ),
        (
            ServerMessage::DominantSpeaker {
                participant_id: "p2".into(),
            },
            r#"{"type":"dominant-speaker","participantId":"p2"}"#,
        ),
        (
            ServerMessage::Chat {
                participant_id: "p2".into(),
                name: "Ben".into(),
                text: "Hallo".into(),
            },
            r#"{"type":"chat","participantId":"p2","name":"Ben","text":"Hallo"}"#,
        ),
        (
            ServerMessage::error("room-full", "the room is full (2 participants)"),
            r#"{"type":"error","code":"room-full","message":"the room is full (2 participants)"}"#,
        ),
        (
            ServerMessage::Closed {
                reason: CloseReason::RoomClosed,
            },
            r#"{"type":"closed","reason":"room-closed"}"#,
        ),
    ]
    .into_iter()
    .chain(roster_messages(anna))
    .chain(moderation_messages())
    .collect()
}

/// The server messages about who is in the room, with their JSON.
fn roster_messages(anna: ParticipantInfo) -> Vec<(ServerMessage, &'static str)> {
    vec![
        (
            ServerMessage::ParticipantJoined {
                participant: anna.clone(),
            },
            r#"{"type":"participant-joined","participant":{"id":"p1","name":"Anna","audioMuted":true,"videoMuted":false,"screenSharing":false,"moderator":true}}"#,
        ),
        (
            ServerMessage::ParticipantsJoined {
                participants: vec![
                    anna,
                    ParticipantInfo {
                        id: "p2".into(),
                        name: "Ben".into(),
                        audio_muted: false,
                        video_muted: false,
                        screen_sharing: false,
                        moderator: false,
                    },
                ],
            },
            r#"{"type":"participants-joined","participants":[{"id":"p1","name":"Anna","audioMuted":true,"videoMuted":false,"screenSharing":false,"moderator":true},{"id":"p2","name":"Ben","audioMuted":false,"videoMuted":false,"screenSharing":false,"moderator":false}]}"#,
        ),
        (
            ServerMessage::ParticipantLeft {
                participant_id: "p1".into(),
                reason: CloseReason::ConnectionLost,
            },
            r#"{"type":"participant-left","participantId":"p1","reason":"connection-lost"}"#,
        ),
        (
            ServerMessage::Connection {
                participant_id: "p1".into(),
                interrupted: true,
            },
            r#"{"type":"connection","participantId":"p1","interrupted":true}"#,
        ),
        (
            ServerMessage::Media {
                participant_id: "p1".into(),
                audio_muted: false,
                video_muted: true,
                screen_sharing: true,
            },
            r#"{"type":"media","participantId":"p1","audioMuted":false,"videoMuted":true,"screenSharing":true}"#,
        ),
    ]
}

/// The server messages about moderation, with their JSON.
fn moderation_messages() -> Vec<(ServerMessage, &'static str)> {
    vec![
        (
            ServerMessage::Hands {
                order: vec!["p2".into(), "p1".into()],
            },
            r#"{"type":"hands","order":["p2","p1"]}"#,
        ),
        (
            ServerMessage::Role {
                participant_id: "p2".into(),
                moderator: true,
            },
            r#"{"type":"role","participantId":"p2","moderator":true}"#,
        ),
        (
            ServerMessage::RoomState { locked: true },
            r#"{"type":"room-state","locked":true}"#,
        ),
        (
            ServerMessage::Waiting {
                moderator_present: false,
            },
            r#"{"type":"waiting","moderatorPresent":false}"#,
        ),
        (
            ServerMessage::Knocking {
                waiting: vec![Knock {
                    id: "p3".into(),
                    name: "Clara".into(),
                }],
            },
            r#"{"type":"knocking","waiting":[{"id":"p3","name":"Clara"}]}"#,
        ),
        (
            ServerMessage::Request {
                kind: ModeratorRequest::CameraStopped,
            },
            r#"{"type":"request","kind":"camera-stopped"}"#,
        ),
    ]
}

#[test]
fn every_server_message_has_its_documented_shape_and_reads_back() {
    for (message, json) in every_server_message() {
        assert_eq!(serde_json::to_string(&message).unwrap(), json);
        let read: ServerMessage = serde_json::from_str(json).unwrap();
        assert_eq!(read, message, "{json} reads back");
    }
}

#[test]
fn client_messages_read_back_what_they_write() {
    let messages = [
        ClientMessage::Join {
            name: "Anna".into(),
            audio_muted: true,
            video_muted: false,
            password: Some("Geheim".into()),
            invite: Some("a.b.c".into()),
            features: vec!["roster-batches".into()],
        },
        ClientMessage::Resume {
            ticket: "t.s".into(),
            features: vec!["roster-batches".into()],
        },
        ClientMessage::Offer {
            sdp: "v=0".into(),
            sources: HashMap::from([("0".into(), "microphone".into())]),
        },
        ClientMessage::Answer { sdp: "v=0".into() },
        ClientMessage::Viewports {
            viewports: vec![Viewport {
                stream_id: "p1".into(),
                height: 360,
            }],
        },
        ClientMessage::ReceiveSettings { audio_only: true },
        ClientMessage::Chat {
            text: "Hallo".into(),
        },
        ClientMessage::Candidate {
            candidate: "candidate:1".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        },
        ClientMessage::Media {
            audio_muted: false,
            video_muted: true,
            screen_sharing: true,
        },
        ClientMessage::Leave,
        ClientMessage::Moderate {
            action: ModerationAction::MuteAll,
            participant_id: None,
        },
        ClientMessage::Moderate {
            action: ModerationAction::Remove,
            participant_id: Some("p2".into()),
        },
        ClientMessage::Hand { raised: true },
    ];
    for message in messages {
        let json = serde_json::to_string(&message).unwrap();
        let read: ClientMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(read, message, "{json} reads back");
    }
}

#[test]
fn client_messages_are_written_as_the_browser_writes_them() {
    let cases = [
        (
            ClientMessage::Join {
                name: "Anna".into(),
                audio_muted: false,
                video_muted: true,
                password: None,
                invite: None,
                features: vec![],
            },
            r#"{"type":"join","name":"Anna","audioMuted":false,"videoMuted":true}"#,
        ),
        (
            ClientMessage::Join {
                name: "Ben".into(),
                audio_muted: false,
                video_muted: false,
                password: Some("Geheim".into()),
                invite: Some("a.b.c".into()),
                features: vec!["roster-batches".into()],
            },
            r#"{"type":"join","name":"Ben","audioMuted":false,"videoMuted":false,"password":"Geheim","invite":"a.b.c","features":["roster-batches"]}"#,
        ),
        (
            ClientMessage::Resume {
                ticket: "t.s".into(),
                features: vec![],
            },
            r#"{"type":"resume","ticket":"t.s"}"#,
        ),
        (
            ClientMessage::Resume {
                ticket: "t.s".into(),
                features: vec!["roster-batches".into()],
            },
            r#"{"type":"resume","ticket":"t.s","features":["roster-batches"]}"#,
        ),
        (
            ClientMessage::Moderate {
                action: ModerationAction::StopCamera,
                participant_id: Some("p2".into()),
            },
            r#"{"type":"moderate","action":"stop-camera","participantId":"p2"}"#,
        ),
        (
            ClientMessage::Hand { raised: false },
            r#"{"type":"hand","raised":false}"#,
        ),
        (
            ClientMessage::Viewports {
                viewports: vec![Viewport {
                    stream_id: "p1".into(),
                    height: 360,
                }],
            },
            r#"{"type":"viewports","viewports":[{"streamId":"p1","height":360}]}"#,
        ),
        (
            ClientMessage::ReceiveSettings { audio_only: true },
            r#"{"type":"receive-settings","audioOnly":true}"#,
        ),
        (
            ClientMessage::Candidate {
                candidate: "candidate:1".into(),
                sdp_mid: None,
                sdp_mline_index: None,
            },
            r#"{"type":"candidate","candidate":"candidate:1"}"#,
        ),
        (
            ClientMessage::Candidate {
                candidate: "candidate:1".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
            },
            r#"{"type":"candidate","candidate":"candidate:1","sdpMid":"0","sdpMLineIndex":0}"#,
        ),
        (
            ClientMessage::Media {
                audio_muted: true,
                video_muted: false,
                screen_sharing: false,
            },
            r#"{"type":"media","audioMuted":true,"videoMuted":false,"screenSharing":false}"#,
        ),
        (ClientMessage::Leave, r#"{"type":"leave"}"#),
    ];
    for (message, json) in cases {
        assert_eq!(serde_json::to_string(&message).unwrap(), json);
    }
}

#[test]
fn the_codes_of_close_reasons_are_their_wire_form() {
    for reason in [
        CloseReason::Left,
        CloseReason::ConnectionLost,
        CloseReason::Refused,
        CloseReason::ProtocolError,
        CloseReason::RoomClosed,
        CloseReason::Replaced,
    ] {
        assert_eq!(
            serde_json::to_string(&reason).unwrap(),
            format!("\"{}\"", reason.as_str())
        );
    }
    assert_eq!(
        CloseReason::from(v1::CloseReason::Unspecified),
        CloseReason::ConnectionLost
    );
}

//! The web client's signalling messages (JSON over WebSocket) and their conversion to and from
//! the `treffpunkt.v1` signals that travel on to the media node.
//!
//! Every message is an object with a `type`. Anything else is refused with a `bad-message`
//! error naming what was wrong; the connection stays open. Unknown fields are ignored, so that
//! newer clients can talk to older gateways.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use treffpunkt_proto::v1::{self, signal::Kind};

/// The largest SDP the gateway relays. Browsers' offers for a call are a few kB.
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// The largest chat message the gateway relays, in bytes (the node counts characters).
pub const MAX_CHAT_BYTES: usize = 4 * 1024;
/// The most entries a client may send in one list (sources, viewports).
pub const MAX_LIST_ENTRIES: usize = 64;
/// The longest name or id inside a message.
const MAX_NAME_BYTES: usize = 128;

/// A message from the browser.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage {
    /// Join the room under this name.
    Join {
        /// What the person typed as their name.
        name: String,
        /// Whether they join with the microphone off.
        #[serde(default, rename = "audioMuted")]
        audio_muted: bool,
        /// Whether they join with the camera off.
        #[serde(default, rename = "videoMuted")]
        video_muted: bool,
    },
    /// Pick up the session this ticket names (after the socket dropped).
    Resume {
        /// The ticket the gateway gave with the session.
        ticket: String,
    },
    /// An SDP offer.
    Offer {
        /// The session description.
        sdp: String,
        /// What each media section carries, by mid: `microphone`, `camera` or `screen`.
        #[serde(default)]
        sources: HashMap<String, String>,
    },
    /// An SDP answer.
    Answer {
        /// The session description.
        sdp: String,
    },
    /// How large the client shows the videos it receives.
    Viewports {
        /// One entry per video.
        viewports: Vec<Viewport>,
    },
    /// Audio only, or video again.
    #[serde(rename_all = "camelCase")]
    ReceiveSettings {
        /// Whether to receive no video at all.
        audio_only: bool,
    },
    /// A chat message for everyone else in the room.
    Chat {
        /// What the person wrote.
        text: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// The candidate line.
        candidate: String,
        /// The media section's id.
        #[serde(default, rename = "sdpMid")]
        sdp_mid: Option<String>,
        /// The media section's index.
        #[serde(default, rename = "sdpMLineIndex")]
        sdp_mline_index: Option<u32>,
    },
    /// The microphone, camera or screen sharing was switched.
    Media {
        /// Whether the microphone is off.
        #[serde(rename = "audioMuted")]
        audio_muted: bool,
        /// Whether the camera is off.
        #[serde(rename = "videoMuted")]
        video_muted: bool,
        /// Whether the screen is shared.
        #[serde(default, rename = "screenSharing")]
        screen_sharing: bool,
    },
    /// The person leaves.
    Leave,
}

/// How large a client shows one video.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Viewport {
    /// The video's stream id.
    pub stream_id: String,
    /// Its height in device pixels; 0 when it is shown nowhere.
    pub height: u32,
}

/// One participant as the browser sees them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    /// Their id, which is also the id of their media stream.
    pub id: String,
    /// Their name.
    pub name: String,
    /// Whether their microphone is off.
    pub audio_muted: bool,
    /// Whether their camera is off.
    pub video_muted: bool,
    /// Whether they share their screen.
    pub screen_sharing: bool,
}

/// A message to the browser.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// You are in.
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// Your participant id.
        participant_id: String,
        /// Who else is here.
        participants: Vec<ParticipantInfo>,
        /// The session already existed: keep the media connection, refresh the roster.
        resumed: bool,
    },
    /// How to resume this session if the socket drops.
    Session {
        /// Opaque; send it back in a `resume` message.
        ticket: String,
    },
    /// The session moved to another media node: close the media connection and wait for the
    /// welcome that follows.
    Reconnect,
    /// An SDP offer from the node.
    Offer {
        /// The session description.
        sdp: String,
    },
    /// An SDP answer from the node.
    Answer {
        /// The session description.
        sdp: String,
    },
    /// A candidate of the node.
    #[serde(rename_all = "camelCase")]
    Candidate {
        /// The candidate line.
        candidate: String,
        /// The media section's id.
        sdp_mid: String,
        /// The media section's index.
        sdp_m_line_index: u32,
    },
    /// Someone came in.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// Someone left.
    #[serde(rename_all = "camelCase")]
    ParticipantLeft {
        /// Who.
        participant_id: String,
        /// `left` or `connection-lost`.
        reason: &'static str,
    },
    /// Someone switched microphone or camera.
    #[serde(rename_all = "camelCase")]
    Media {
        /// Who.
        participant_id: String,
        /// Whether the microphone is off.
        audio_muted: bool,
        /// Whether the camera is off.
        video_muted: bool,
        /// Whether the screen is shared.
        screen_sharing: bool,
    },
    /// Encode only these simulcast layers of a track (lowest first).
    PublishLayers {
        /// `camera` or `screen`.
        source: String,
        /// One flag per layer, in the order of the offer's encodings.
        active: Vec<bool>,
    },
    /// A video is paused or plays again.
    #[serde(rename_all = "camelCase")]
    VideoState {
        /// The video's stream id.
        stream_id: String,
        /// `playing`, `paused-bandwidth` or `paused-last-n`.
        state: &'static str,
    },
    /// Who speaks now.
    #[serde(rename_all = "camelCase")]
    DominantSpeaker {
        /// The speaker's participant id.
        participant_id: String,
    },
    /// A chat message from someone in the room.
    #[serde(rename_all = "camelCase")]
    Chat {
        /// The sender's participant id.
        participant_id: String,
        /// The sender's name.
        name: String,
        /// What they wrote.
        text: String,
    },
    /// Something could not be done. `code` is stable; the client translates it.
    Error {
        /// Machine-readable code.
        code: String,
        /// English detail for logs and developers.
        message: String,
    },
    /// Your session has ended.
    Closed {
        /// Why, as a stable code.
        reason: &'static str,
    },
}

impl ServerMessage {
    /// An error with a stable `code`.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// A client message that cannot go on to the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// The SDP is larger than [`MAX_SDP_BYTES`].
    #[error("the session description is larger than {MAX_SDP_BYTES} bytes")]
    SdpTooLarge,
    /// The message only makes sense before joining.
    #[error("already joined")]
    AlreadyJoined,
    /// A chat message is larger than [`MAX_CHAT_BYTES`].
    #[error("the chat message is larger than {MAX_CHAT_BYTES} bytes")]
    ChatTooLarge,
    /// A list or a name in the message is too long.
    #[error("the message has too many entries or too long a name")]
    TooMany,
}

fn check_sdp(sdp: String) -> Result<v1::SessionDescription, RelayError> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(RelayError::SdpTooLarge);
    }
    Ok(v1::SessionDescription {
        sdp,
        ..Default::default()
    })
}

fn check_names<'a>(
    count: usize,
    names: impl IntoIterator<Item = &'a String>,
) -> Result<(), RelayError> {
    if count > MAX_LIST_ENTRIES || names.into_iter().any(|name| name.len() > MAX_NAME_BYTES) {
        return Err(RelayError::TooMany);
    }
    Ok(())
}

/// Converts a message of a joined client to the signal for its node.
pub fn to_signal(message: ClientMessage) -> Result<v1::Signal, RelayError> {
    let kind = match message {
        ClientMessage::Join { .. } | ClientMessage::Resume { .. } => {
            return Err(RelayError::AlreadyJoined);
        }
        ClientMessage::Offer { sdp, sources } => {
            check_names(sources.len(), sources.keys().chain(sources.values()))?;
            Kind::Offer(v1::SessionDescription {
                sources,
                ..check_sdp(sdp)?
            })
        }
        ClientMessage::Viewports { viewports } => {
            check_names(viewports.len(), viewports.iter().map(|v| &v.stream_id))?;
            Kind::Viewports(v1::Viewports {
                viewports: viewports
                    .into_iter()
                    .map(|v| v1::Viewport {
                        stream_id: v.stream_id,
                        height: v.height,
                    })
                    .collect(),
            })
        }
        ClientMessage::ReceiveSettings { audio_only } => {
            Kind::ReceiveSettings(v1::ReceiveSettings { audio_only })
        }
        ClientMessage::Chat { text } => {
            if text.len() > MAX_CHAT_BYTES {
                return Err(RelayError::ChatTooLarge);
            }
            Kind::Chat(v1::ChatMessage {
                text,
                ..Default::default()
            })
        }
        ClientMessage::Answer { sdp } => Kind::Answer(check_sdp(sdp)?),
        ClientMessage::Candidate {
            candidate,
            sdp_mid,
            sdp_mline_index,
        } => {
            if candidate.len() > 1024 {
                return Err(RelayError::SdpTooLarge);
            }
            Kind::Candidate(v1::IceCandidate {
                candidate,
                sdp_mid: sdp_mid.unwrap_or_default(),
                sdp_mline_index: sdp_mline_index.unwrap_or_default(),
            })
        }
        ClientMessage::Media {
            audio_muted,
            video_muted,
            screen_sharing,
        } => Kind::MediaState(v1::MediaState {
            participant_id: String::new(),
            audio_muted,
            video_muted,
            screen_sharing,
        }),
        ClientMessage::Leave => Kind::Leave(v1::Leave {}),
    };
    Ok(v1::Signal::new(kind))
}

fn participant_info(participant: v1::Participant) -> ParticipantInfo {
    let media = participant.media.unwrap_or_default();
    ParticipantInfo {
        id: participant.participant_id,
        name: participant.display_name,
        audio_muted: media.audio_muted,
        video_muted: media.video_muted,
        screen_sharing: media.screen_sharing,
    }
}

/// The stable code of a close reason, for the client.
pub fn close_reason_code(reason: v1::CloseReason) -> &'static str {
    match reason {
        v1::CloseReason::Left => "left",
        v1::CloseReason::ConnectionLost | v1::CloseReason::Unspecified => "connection-lost",
        v1::CloseReason::Refused => "refused",
        v1::CloseReason::ProtocolError => "protocol-error",
        v1::CloseReason::RoomClosed => "room-closed",
    }
}

/// Converts a node's signal to the message for the browser; `None` for signals that have no
/// meaning for a browser.
pub fn from_signal(signal: v1::Signal) -> Option<ServerMessage> {
    Some(match signal.kind? {
        Kind::Offer(description) => ServerMessage::Offer {
            sdp: description.sdp,
        },
        Kind::Answer(description) => ServerMessage::Answer {
            sdp: description.sdp,
        },
        Kind::Candidate(candidate) => ServerMessage::Candidate {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_m_line_index: candidate.sdp_mline_index,
        },
        Kind::Welcome(welcome) => ServerMessage::Welcome {
            resumed: welcome.resumed,
            participant_id: welcome.participant_id,
            participants: welcome
                .participants
                .into_iter()
                .map(participant_info)
                .collect(),
        },
        Kind::ParticipantJoined(participant) => ServerMessage::ParticipantJoined {
            participant: participant_info(participant),
        },
        Kind::ParticipantLeft(left) => ServerMessage::ParticipantLeft {
            participant_id: left.participant_id,
            reason: close_reason_code(v1::CloseReason::try_from(left.reason).unwrap_or_default()),
        },
        Kind::MediaState(state) => ServerMessage::Media {
            participant_id: state.participant_id,
            audio_muted: state.audio_muted,
            video_muted: state.video_muted,
            screen_sharing: state.screen_sharing,
        },
        Kind::Error(error) => ServerMessage::Error {
            code: error.code,
            message: error.message,
        },
        Kind::PublishLayers(layers) => ServerMessage::PublishLayers {
            source: layers.source,
            active: layers.active,
        },
        Kind::VideoState(state) => ServerMessage::VideoState {
            stream_id: state.stream_id,
            state: match v1::video_state::State::try_from(state.state).unwrap_or_default() {
                v1::video_state::State::PausedBandwidth => "paused-bandwidth",
                v1::video_state::State::PausedLastN => "paused-last-n",
                v1::video_state::State::Playing | v1::video_state::State::Unspecified => "playing",
            },
        },
        Kind::DominantSpeaker(speaker) => ServerMessage::DominantSpeaker {
            participant_id: speaker.participant_id,
        },
        Kind::Chat(message) => ServerMessage::Chat {
            participant_id: message.participant_id,
            name: message.display_name,
            text: message.text,
        },
        Kind::Leave(_) | Kind::Viewports(_) | Kind::ReceiveSettings(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_and_unknown_ones_are_refused() {
        let join: ClientMessage = serde_json::from_str(r#"{"type":"join","name":"Anna"}"#).unwrap();
        assert_eq!(
            join,
            ClientMessage::Join {
                name: "Anna".into(),
                audio_muted: false,
                video_muted: false
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
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let message = ServerMessage::ParticipantLeft {
            participant_id: "p1".into(),
            reason: "left",
        };
        assert_eq!(
            serde_json::to_string(&message).unwrap(),
            r#"{"type":"participant-left","participantId":"p1","reason":"left"}"#
        );
    }
}

//! The relay between the signalling protocol and the `treffpunkt.v1` signals that travel on
//! to the media node, with the limits a client's messages must keep.

use super::{
    ClientMessage, CloseReason, Knock, ModerationAction, ModeratorRequest, ParticipantInfo,
    ServerMessage, VideoState,
};
use crate::features::Features;
use crate::v1::{self, signal::Kind};

/// The largest SDP the gateway relays. Browsers' offers for a call are a few kB.
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// The largest chat message the gateway relays, in bytes (the node counts characters).
pub const MAX_CHAT_BYTES: usize = 4 * 1024;
/// The most entries a client may send in one list (sources, viewports).
pub const MAX_LIST_ENTRIES: usize = 64;
/// The longest name or id inside a message.
const MAX_NAME_BYTES: usize = 128;
/// The longest ICE candidate line relayed.
const MAX_CANDIDATE_BYTES: usize = 1024;

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
    /// The gateway answers the message itself; the node has no part in it.
    #[error("the gateway answers this message itself")]
    ForTheGateway,
}

impl RelayError {
    /// The stable code the client is answered with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SdpTooLarge | Self::ChatTooLarge | Self::TooMany => "message-too-large",
            Self::AlreadyJoined => "already-joined",
            Self::ForTheGateway => "not-relayed",
        }
    }
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
        ClientMessage::Invitation => return Err(RelayError::ForTheGateway),
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
            if candidate.len() > MAX_CANDIDATE_BYTES {
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
        ClientMessage::Moderate {
            action,
            participant_id,
        } => {
            let participant_id = participant_id.unwrap_or_default();
            check_names(0, [&participant_id])?;
            Kind::Moderate(v1::Moderate {
                action: v1_action(action) as i32,
                participant_id,
            })
        }
        ClientMessage::Hand { raised } => Kind::RaiseHand(v1::RaiseHand { raised }),
    };
    Ok(v1::Signal::new(kind))
}

fn v1_action(action: ModerationAction) -> v1::moderate::Action {
    use v1::moderate::Action;
    match action {
        ModerationAction::Admit => Action::Admit,
        ModerationAction::Deny => Action::Deny,
        ModerationAction::Mute => Action::Mute,
        ModerationAction::MuteAll => Action::MuteAll,
        ModerationAction::AskUnmute => Action::AskUnmute,
        ModerationAction::StopCamera => Action::StopCamera,
        ModerationAction::StopScreen => Action::StopScreen,
        ModerationAction::Remove => Action::Remove,
        ModerationAction::MakeModerator => Action::MakeModerator,
        ModerationAction::LowerHand => Action::LowerHand,
        ModerationAction::Lock => Action::Lock,
        ModerationAction::Unlock => Action::Unlock,
        ModerationAction::End => Action::End,
    }
}

fn participant_info(participant: v1::Participant) -> ParticipantInfo {
    let media = participant.media.unwrap_or_default();
    ParticipantInfo {
        id: participant.participant_id,
        name: participant.display_name,
        audio_muted: media.audio_muted,
        video_muted: media.video_muted,
        screen_sharing: media.screen_sharing,
        moderator: participant.moderator,
    }
}

/// What a moderator's request says to the browser; `None` for one the node did not name.
fn request(kind: v1::moderator_request::Kind) -> Option<ModeratorRequest> {
    use v1::moderator_request::Kind as RequestKind;
    Some(match kind {
        RequestKind::Muted => ModeratorRequest::Muted,
        RequestKind::Unmute => ModeratorRequest::Unmute,
        RequestKind::CameraStopped => ModeratorRequest::CameraStopped,
        RequestKind::ScreenStopped => ModeratorRequest::ScreenStopped,
        RequestKind::Unspecified => return None,
    })
}

impl From<v1::CloseReason> for CloseReason {
    /// A reason the node did not name counts as a lost connection.
    fn from(reason: v1::CloseReason) -> Self {
        match reason {
            v1::CloseReason::Left => Self::Left,
            v1::CloseReason::ConnectionLost | v1::CloseReason::Unspecified => Self::ConnectionLost,
            v1::CloseReason::Refused => Self::Refused,
            v1::CloseReason::ProtocolError => Self::ProtocolError,
            v1::CloseReason::RoomClosed => Self::RoomClosed,
            v1::CloseReason::Replaced => Self::Replaced,
            v1::CloseReason::Removed => Self::Removed,
            v1::CloseReason::Ended => Self::Ended,
            v1::CloseReason::Denied => Self::Denied,
        }
    }
}

impl From<v1::video_state::State> for VideoState {
    /// A state the node did not name counts as playing.
    fn from(state: v1::video_state::State) -> Self {
        match state {
            v1::video_state::State::PausedBandwidth => Self::PausedBandwidth,
            v1::video_state::State::PausedLastN => Self::PausedLastN,
            v1::video_state::State::Playing | v1::video_state::State::Unspecified => Self::Playing,
        }
    }
}

/// `message` in the forms a client that understands `features` understands: a
/// `participants-joined` becomes one `participant-joined` per participant for a client that
/// does not name [`ROSTER_BATCHES`](crate::features::ROSTER_BATCHES). A message that keeps its
/// form passes through without a copy or an allocation.
pub fn for_client(
    message: ServerMessage,
    features: Features,
) -> impl Iterator<Item = ServerMessage> {
    let (same, singles) = match message {
        ServerMessage::ParticipantsJoined { participants } if !features.roster_batches => {
            (None, participants)
        }
        message => (Some(message), Vec::new()),
    };
    let singles =
        (singles.into_iter()).map(|participant| ServerMessage::ParticipantJoined { participant });
    same.into_iter().chain(singles)
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
            moderator: welcome.moderator,
            locked: welcome.locked,
            hands: welcome.hands,
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
        Kind::ParticipantsJoined(joined) => ServerMessage::ParticipantsJoined {
            participants: joined
                .participants
                .into_iter()
                .map(participant_info)
                .collect(),
        },
        Kind::ParticipantLeft(left) => ServerMessage::ParticipantLeft {
            participant_id: left.participant_id,
            reason: v1::CloseReason::try_from(left.reason)
                .unwrap_or_default()
                .into(),
        },
        Kind::Connection(connection) => ServerMessage::Connection {
            participant_id: connection.participant_id,
            interrupted: connection.interrupted,
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
            state: v1::video_state::State::try_from(state.state)
                .unwrap_or_default()
                .into(),
        },
        Kind::DominantSpeaker(speaker) => ServerMessage::DominantSpeaker {
            participant_id: speaker.participant_id,
        },
        Kind::Chat(message) => ServerMessage::Chat {
            participant_id: message.participant_id,
            name: message.display_name,
            text: message.text,
        },
        Kind::Hands(hands) => ServerMessage::Hands {
            order: hands.participant_ids,
        },
        Kind::Role(role) => ServerMessage::Role {
            participant_id: role.participant_id,
            moderator: role.moderator,
        },
        Kind::RoomState(state) => ServerMessage::RoomState {
            locked: state.locked,
        },
        Kind::Lobby(lobby) => ServerMessage::Waiting {
            moderator_present: lobby.moderator_present,
        },
        Kind::Knocking(knocking) => ServerMessage::Knocking {
            waiting: knocking
                .waiting
                .into_iter()
                .map(|knock| Knock {
                    id: knock.participant_id,
                    name: knock.display_name,
                })
                .collect(),
        },
        Kind::Request(asked) => ServerMessage::Request {
            kind: request(v1::moderator_request::Kind::try_from(asked.kind).ok()?)?,
        },
        Kind::Leave(_)
        | Kind::Viewports(_)
        | Kind::ReceiveSettings(_)
        | Kind::Moderate(_)
        | Kind::RaiseHand(_) => return None,
    })
}

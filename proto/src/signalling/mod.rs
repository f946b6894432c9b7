//! The signalling protocol between a participant and the gateway: JSON over the WebSocket at
//! `/api/v1/rooms/<tenant>/<room>/signal`, typed once here for the gateway, the Rust client and
//! the tests.
//!
//! Every message is an object with a `type` in kebab-case; its fields are in camelCase. A
//! participant sends [`ClientMessage`]s and receives [`ServerMessage`]s. The browser client
//! speaks the same JSON, so the wire format of these types is fixed: the shape tests in this
//! module pin it byte for byte. Unknown fields are ignored, so that newer clients can talk to
//! older gateways; an unknown `type` is refused, and the gateway answers it with a
//! `bad-message` error and keeps the connection open.
//!
//! A session runs in two phases:
//!
//! 1. Joining: the participant sends [`ClientMessage::Join`] (or [`ClientMessage::Resume`] with
//!    the ticket of an earlier session). A refusal comes back as [`ServerMessage::Error`] with
//!    a stable code (`room-full`, `room-not-found`, `name-empty`, ...) and the participant may
//!    try again. A protected room asks for what it needs: `password-required` (send the
//!    password with the join; `password-wrong`, and after too many wrong ones from an address
//!    `too-many-attempts`), `invite-required` (join through an invitation link;
//!    `invite-invalid`, `invite-expired`). Once admitted, the gateway sends [`ServerMessage::Session`] with a resume
//!    ticket, and the node follows with [`ServerMessage::Welcome`]. The gateway's own limits
//!    answer the same way: `too-many-joins` (try again later), and, followed by closing the
//!    socket, `too-many-connections` (too many sockets from one address), `server-busy` (too
//!    many sockets in all) and `join-timeout` (the socket did not join in time). The join
//!    and the resume name the `features` the client understands ([`crate::features`]): a
//!    page loaded before an upgrade resumes through a newer gateway, which then speaks the
//!    older forms with it.
//! 2. In the call: SDP, candidates, media state, viewports and chat travel in both directions
//!    until [`ClientMessage::Leave`] or [`ServerMessage::Closed`]. A
//!    [`ServerMessage::Reconnect`] means the session moved to another node: the client drops its
//!    media connection and waits for the next welcome.
//!
//! # Why the conversion to `treffpunkt.v1` lives here too
//!
//! The gateway relays a joined participant's messages to its media node as
//! [`v1::Signal`](crate::v1::Signal)s and back ([`to_signal`], [`from_signal`]). Both ends of
//! that conversion are protocol types of this crate, and the limits it enforces
//! ([`MAX_SDP_BYTES`], [`MAX_CHAT_BYTES`], [`MAX_LIST_ENTRIES`]) are part of the contract a
//! client must respect, so they are kept beside the messages rather than in the gateway, which
//! then only moves frames.

mod relay;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use relay::{
    MAX_CHAT_BYTES, MAX_LIST_ENTRIES, MAX_SDP_BYTES, RelayError, for_client, from_signal, to_signal,
};

/// A message from a participant to the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        /// The room's password (access Password).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        /// The invitation from the link (access InviteOnly).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite: Option<String>,
        /// What the client understands beyond the forms every release understands
        /// ([`crate::features`]); without it, it gets the older forms.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// Pick up the session this ticket names (after the socket dropped).
    Resume {
        /// The ticket the gateway gave with the session.
        ticket: String,
        /// As the join's.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
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
        #[serde(default, rename = "sdpMid", skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// The media section's index.
        #[serde(
            default,
            rename = "sdpMLineIndex",
            skip_serializing_if = "Option::is_none"
        )]
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
    /// A moderator's action; anyone else is answered `not-moderator` and nothing happens.
    #[serde(rename_all = "camelCase")]
    Moderate {
        /// What to do.
        action: ModerationAction,
        /// To whom, for the actions on one participant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        participant_id: Option<String>,
    },
    /// Raise or lower one's own hand.
    Hand {
        /// Up or down.
        raised: bool,
    },
    /// Ask the gateway for a link that lets someone else in: answered with an `invitation`.
    /// In an invite-only room only a moderator gets one; anyone else is answered
    /// `not-moderator`.
    Invitation,
}

/// What a moderator does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModerationAction {
    /// `admit`: let someone in from the lobby.
    Admit,
    /// `deny`: do not let them in.
    Deny,
    /// `mute`: switch someone's microphone off (they switch it on again themselves).
    Mute,
    /// `mute-all`: everyone's microphone but the moderators'.
    MuteAll,
    /// `ask-unmute`: ask someone to switch their microphone on.
    AskUnmute,
    /// `stop-camera`: switch someone's camera off.
    StopCamera,
    /// `stop-screen`: stop someone's screen sharing.
    StopScreen,
    /// `remove`: someone leaves the meeting and cannot resume their session.
    Remove,
    /// `make-moderator`: someone moderates too.
    MakeModerator,
    /// `lower-hand`: lower someone's hand.
    LowerHand,
    /// `lock`: nobody new comes in, but moderators.
    Lock,
    /// `unlock`: people may come in again.
    Unlock,
    /// `end`: the meeting ends for everyone.
    End,
}

/// Someone waiting in the lobby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knock {
    /// Their participant id, to admit or deny them by.
    pub id: String,
    /// Their name.
    pub name: String,
}

/// What a moderator asks of a participant, or did to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeratorRequest {
    /// `muted`: your microphone was switched off.
    Muted,
    /// `unmute`: please switch your microphone on.
    Unmute,
    /// `camera-stopped`: your camera was switched off.
    CameraStopped,
    /// `screen-stopped`: your screen sharing was stopped.
    ScreenStopped,
}

/// How large a client shows one video.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Viewport {
    /// The video's stream id.
    pub stream_id: String,
    /// Its height in device pixels; 0 when it is shown nowhere.
    pub height: u32,
}

/// One participant as the others see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Whether they moderate.
    #[serde(default)]
    pub moderator: bool,
}

/// Why a session ended or a participant left, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseReason {
    /// `left`: the person left.
    Left,
    /// `connection-lost`: the connection broke and could not be carried on.
    ConnectionLost,
    /// `refused`: the node refused the session.
    Refused,
    /// `protocol-error`: the client broke the protocol.
    ProtocolError,
    /// `room-closed`: the room was closed (deleted, or its tenant suspended).
    RoomClosed,
    /// `replaced`: the participant joined again elsewhere, which ended this session.
    Replaced,
    /// `removed`: a moderator removed the participant.
    Removed,
    /// `ended`: a moderator ended the meeting for everyone.
    Ended,
    /// `denied`: a moderator did not let the participant in from the lobby.
    Denied,
}

impl CloseReason {
    /// The code as it travels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::ConnectionLost => "connection-lost",
            Self::Refused => "refused",
            Self::ProtocolError => "protocol-error",
            Self::RoomClosed => "room-closed",
            Self::Replaced => "replaced",
            Self::Removed => "removed",
            Self::Ended => "ended",
            Self::Denied => "denied",
        }
    }
}

/// Whether a received video plays, as the node decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VideoState {
    /// `playing`: it is forwarded.
    Playing,
    /// `paused-bandwidth`: not even its lowest layer fits the participant's downlink.
    PausedBandwidth,
    /// `paused-last-n`: only the latest speakers' videos are sent in this room.
    PausedLastN,
}

/// A TURN server and the time-limited credentials for it, as `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `turn:` and `turns:` URLs of one server.
    pub urls: Vec<String>,
    /// `<expiry, seconds since 1970>:<random id>`.
    pub username: String,
    /// The password that goes with `username`.
    pub credential: String,
}

/// A message from the gateway (or, relayed, from the media node) to a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        /// Whether you moderate.
        #[serde(default)]
        moderator: bool,
        /// Whether the room is locked.
        #[serde(default)]
        locked: bool,
        /// The raised hands, in the order they went up.
        #[serde(default)]
        hands: Vec<String>,
    },
    /// How to resume this session if the socket drops, and the TURN servers its media
    /// connection may use (none when the platform runs none).
    #[serde(rename_all = "camelCase")]
    Session {
        /// Opaque; send it back in a `resume` message.
        ticket: String,
        /// For `RTCPeerConnection`'s `iceServers`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
        /// The room's title (its `displayName`), when it has one: the page shows it in place
        /// of the room's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room_title: Option<String>,
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
    /// Several came in at once (the room's participants on another node, when the room spreads
    /// to this client's node): shown together, like a welcome's. Only to a client that named
    /// [`crate::features::ROSTER_BATCHES`]; the others get a [`ServerMessage::ParticipantJoined`]
    /// for each ([`for_client`]).
    ParticipantsJoined {
        /// Who.
        participants: Vec<ParticipantInfo>,
    },
    /// Someone left.
    #[serde(rename_all = "camelCase")]
    ParticipantLeft {
        /// Who.
        participant_id: String,
        /// `left` or `connection-lost`.
        reason: CloseReason,
    },
    /// Someone's connection broke off (their page may be back within seconds), or is back.
    #[serde(rename_all = "camelCase")]
    Connection {
        /// Who.
        participant_id: String,
        /// Broken off, or back.
        interrupted: bool,
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
        /// Whether it plays, and if not, why.
        state: VideoState,
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
    /// The raised hands, in the order they went up.
    Hands {
        /// Participant ids, the first raised first.
        order: Vec<String>,
    },
    /// Someone became (or stopped being) a moderator.
    #[serde(rename_all = "camelCase")]
    Role {
        /// Who.
        participant_id: String,
        /// Whether they moderate now.
        moderator: bool,
    },
    /// Whether the room is locked.
    RoomState {
        /// Locked: nobody new comes in but moderators.
        locked: bool,
    },
    /// You wait in the lobby until a moderator lets you in.
    #[serde(rename_all = "camelCase")]
    Waiting {
        /// Whether a moderator is in the meeting to do so.
        moderator_present: bool,
    },
    /// For moderators: who waits in the lobby now.
    Knocking {
        /// Everyone waiting, the first to knock first.
        waiting: Vec<Knock>,
    },
    /// A moderator asks something of you, or did something to your microphone, camera or
    /// screen.
    Request {
        /// What.
        kind: ModeratorRequest,
    },
    /// The answer to an `invitation` request: the invitation to add to the room's address
    /// (`#invite=...`), or none when the address alone lets people in.
    #[serde(rename_all = "camelCase")]
    Invitation {
        /// The signed invitation, for an invite-only room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        invite: Option<String>,
        /// When the invitation expires (Unix milliseconds).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at_unix_ms: Option<u64>,
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
        /// Why.
        reason: CloseReason,
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

#[cfg(test)]
mod tests;

//! The core's vocabulary: what it is told (a join, a published layer) and what it decides
//! ([`Output`]), with the errors it answers requests with.

use super::{Codec, LinkId, MAX_CHAT_CHARS, MediaKind, PeerId, RelayMessage};

/// One participant as the others see them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// The id the control plane gave them; also their media stream's id.
    pub participant_id: String,
    /// Their name.
    pub display_name: String,
    /// Whether their microphone is off.
    pub audio_muted: bool,
    /// Whether their camera is off.
    pub video_muted: bool,
    /// Whether they share their screen.
    pub screen_sharing: bool,
    /// Whether they moderate.
    pub moderator: bool,
}

/// Why someone left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveReason {
    /// They left.
    Left,
    /// Their connection was lost.
    ConnectionLost,
}

/// What a participant is told about their room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RosterEvent {
    /// You are in; these are the others.
    Welcome {
        /// Your own id.
        participant_id: String,
        /// Everyone else in the room.
        others: Vec<ParticipantInfo>,
        /// Whether you moderate.
        moderator: bool,
        /// Whether the room is locked.
        locked: bool,
        /// The raised hands, in order.
        hands: Vec<String>,
    },
    /// Someone came in.
    Joined(ParticipantInfo),
    /// Several came in at once: the room's participants on another node, when the link to it
    /// opens. Told as one, so that a page lays them out once.
    JoinedTogether(Vec<ParticipantInfo>),
    /// Someone left.
    Left {
        /// Who.
        participant_id: String,
        /// Why.
        reason: LeaveReason,
    },
    /// Someone's connection broke off (their page may be back within seconds), or is back.
    Connection {
        /// Who.
        participant_id: String,
        /// Broken off, or back.
        interrupted: bool,
    },
    /// Someone switched microphone or camera.
    Media {
        /// Who.
        participant_id: String,
        /// Whether their microphone is off.
        audio_muted: bool,
        /// Whether their camera is off.
        video_muted: bool,
        /// Whether they share their screen.
        screen_sharing: bool,
    },
    /// Someone became a moderator.
    Moderator {
        /// Who.
        participant_id: String,
    },
    /// The raised hands now, in the order they went up.
    Hands(Vec<String>),
    /// The room was locked or unlocked.
    Locked(bool),
}

/// What a published track carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The microphone.
    Microphone,
    /// The camera.
    Camera,
    /// A shared screen or window.
    Screen,
}

impl Source {
    /// The name clients use for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Microphone => "microphone",
            Self::Camera => "camera",
            Self::Screen => "screen",
        }
    }

    /// The source of that name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "microphone" => Some(Self::Microphone),
            "camera" => Some(Self::Camera),
            "screen" => Some(Self::Screen),
            _ => None,
        }
    }
}

/// A track (or one simulcast layer of it) that began to arrive from a publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishedLayer {
    /// The session's key for the track; the layers of one track share it.
    pub track: u64,
    /// The SSRC the layer arrives on.
    pub ssrc: u32,
    /// The layer, lowest 0; 0 for a track without simulcast.
    pub layer: usize,
    /// How many layers the track has (1 without simulcast).
    pub layer_count: usize,
    /// Its codec.
    pub codec: Codec,
    /// What it carries.
    pub source: Source,
}

/// A track that a participant's offer says it sends, announced when the offer is answered:
/// the others negotiate it while the publisher's connection comes up, so its first packet
/// finds them ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfferedTrack {
    /// The session's key for the track, as in [`PublishedLayer::track`].
    pub track: u64,
    /// How many layers the track has (1 without simulcast).
    pub layer_count: usize,
    /// The codec it was negotiated with first.
    pub codec: Codec,
    /// What it carries.
    pub source: Source,
}

/// A down-track to set up on a subscriber's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownTrack {
    /// Whose connection.
    pub subscriber: PeerId,
    /// The SSRC it carries on that leg.
    pub ssrc: u32,
    /// The publisher's connection.
    pub publisher: PeerId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec the publisher sends.
    pub codec: Codec,
    /// The media stream id the subscriber sees: the publisher's participant id, with `:screen`
    /// for a shared screen.
    pub stream_id: String,
    /// The track id the subscriber sees, unique on its connection.
    pub track_id: String,
}

/// Whether a subscriber gets a video, as its client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoState {
    /// The video is sent.
    Playing,
    /// The video is paused: the subscriber's line cannot carry it.
    PausedForBandwidth,
    /// The video is paused: only the latest speakers' videos are sent in this room.
    PausedForLastN,
}

/// A chat message as it is delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// The sender's participant id.
    pub from: String,
    /// The sender's name.
    pub display_name: String,
    /// What they wrote.
    pub text: String,
}

/// What the core decided; the node carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Tell a participant about their room.
    Roster {
        /// To whom.
        to: PeerId,
        /// What.
        event: RosterEvent,
    },
    /// Add a down-track to a subscriber's connection (and renegotiate).
    AddDownTrack(DownTrack),
    /// Remove a down-track from a subscriber's connection (and renegotiate).
    RemoveDownTrack {
        /// Whose connection.
        subscriber: PeerId,
        /// The down-track's SSRC.
        ssrc: u32,
    },
    /// Ask a publisher for a keyframe on one of its SSRCs.
    RequestKeyframe {
        /// Whose connection.
        publisher: PeerId,
        /// The publisher's SSRC.
        ssrc: u32,
    },
    /// Tell a publisher which simulcast layers of a track to encode.
    PublisherLayers {
        /// Whose connection.
        publisher: PeerId,
        /// What the track carries.
        source: Source,
        /// One flag per layer, lowest first.
        active: Vec<bool>,
    },
    /// Tell a subscriber whether it gets a video.
    Video {
        /// To whom.
        to: PeerId,
        /// The video's stream id.
        stream_id: String,
        /// Whether it is sent.
        state: VideoState,
    },
    /// Tell a participant who speaks now.
    DominantSpeaker {
        /// To whom.
        to: PeerId,
        /// The speaker's participant id.
        participant_id: String,
    },
    /// Deliver a chat message.
    Chat {
        /// To whom.
        to: PeerId,
        /// What.
        message: ChatMessage,
    },
    /// Tell someone in the lobby that they wait, and whether a moderator is there.
    Waiting {
        /// To whom.
        to: PeerId,
        /// Whether a moderator is in the meeting.
        moderator_present: bool,
    },
    /// Tell a moderator who waits in the lobby: (participant id, name), first come first.
    Knocking {
        /// To whom.
        to: PeerId,
        /// Who waits.
        waiting: Vec<(String, String)>,
    },
    /// Tell a participant what a moderator did to, or asks of, them.
    Request {
        /// To whom.
        to: PeerId,
        /// What.
        request: ModeratorRequest,
    },
    /// End a session: a moderator removed the participant, ended the meeting or did not let
    /// them in.
    Close {
        /// Whose session.
        peer: PeerId,
        /// Why.
        reason: Ending,
    },
    /// Tell the node at the other end of a link (see [`RelayMessage`]).
    Relay {
        /// Which link.
        link: LinkId,
        /// What.
        message: RelayMessage,
    },
}

impl Output {
    /// The participant an output is for, if it is for one.
    pub fn addressee(&self) -> Option<PeerId> {
        match self {
            Self::Roster { to, .. }
            | Self::Video { to, .. }
            | Self::DominantSpeaker { to, .. }
            | Self::Chat { to, .. }
            | Self::Waiting { to, .. }
            | Self::Knocking { to, .. }
            | Self::Request { to, .. } => Some(*to),
            Self::AddDownTrack(track) => Some(track.subscriber),
            Self::RemoveDownTrack { subscriber, .. } => Some(*subscriber),
            Self::RequestKeyframe { publisher, .. } | Self::PublisherLayers { publisher, .. } => {
                Some(*publisher)
            }
            Self::Close { peer, .. } => Some(*peer),
            Self::Relay { .. } => None,
        }
    }
}

/// What a moderator did to, or asks of, a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeratorRequest {
    /// Their microphone was switched off.
    Muted,
    /// Please switch the microphone on.
    Unmute,
    /// Their camera was switched off.
    CameraStopped,
    /// Their screen sharing was stopped.
    ScreenStopped,
}

/// Why a moderator ended a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// They were removed.
    Removed,
    /// The meeting was ended for everyone.
    Ended,
    /// They were not let in from the lobby.
    Denied,
}

/// What a moderator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let someone in from the lobby.
    Admit,
    /// Do not let them in.
    Deny,
    /// Switch someone's microphone off.
    Mute,
    /// Everyone's microphone but the moderators'.
    MuteAll,
    /// Ask someone to switch the microphone on.
    AskUnmute,
    /// Switch someone's camera off.
    StopCamera,
    /// Stop someone's screen sharing.
    StopScreen,
    /// Remove someone from the meeting.
    Remove,
    /// Make someone a moderator.
    MakeModerator,
    /// Lower someone's hand.
    LowerHand,
    /// Let nobody new in but moderators.
    Lock,
    /// Let people in again.
    Unlock,
    /// End the meeting for everyone.
    End,
}

/// Why a moderator's action was not carried out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModerationError {
    /// Only moderators may.
    #[error("only moderators may do that")]
    NotModerator,
    /// Nobody of that id is in the meeting (or waits in its lobby).
    #[error("nobody of that id is here")]
    NoSuchParticipant,
}

/// Where a join put the participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// In the meeting.
    In,
    /// In the lobby, until a moderator lets them in.
    Waiting,
}

/// What a join asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// The room's key, `tenant/name`.
    pub room: String,
    /// The participant's id from the control plane.
    pub participant_id: String,
    /// Their name.
    pub display_name: String,
    /// The room's participant limit; 0 for none.
    pub max_participants: u32,
    /// How many speakers' cameras each participant receives; 0 for all.
    pub last_n: u32,
    /// They moderate.
    pub moderator: bool,
    /// They wait in the lobby until a moderator lets them in (unless they moderate).
    pub lobby: bool,
    /// They moderate if nobody in the room does when they come in.
    pub first_moderates: bool,
}

/// Why a join was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The room has as many participants as it may.
    #[error("the room is full ({limit} participants)")]
    RoomFull {
        /// The limit.
        limit: u32,
    },
    /// This connection already joined.
    #[error("this connection has joined already")]
    AlreadyJoined,
    /// A moderator locked the room.
    #[error("the room is locked")]
    Locked,
    /// As many people wait in the lobby as may.
    #[error("too many people wait in the lobby")]
    LobbyFull,
}

/// Why a chat message was not delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// Nothing but blanks.
    #[error("the message is empty")]
    Empty,
    /// Longer than [`MAX_CHAT_CHARS`].
    #[error("the message is longer than {MAX_CHAT_CHARS} characters")]
    TooLong,
    /// Too many messages in a short time.
    #[error("too many messages; wait a moment")]
    TooFast,
    /// The sender is in no room.
    #[error("not in a room")]
    NotJoined,
}

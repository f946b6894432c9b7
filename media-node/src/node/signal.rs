//! The core's roster events as `treffpunkt.v1` signals for the clients.

use treffpunkt_proto::v1::{self, signal::Kind};

use crate::core::{Action, LeaveReason, ModeratorRequest, ParticipantInfo, RosterEvent};

/// A participant as clients (and other nodes) see it.
pub fn participant(info: ParticipantInfo) -> v1::Participant {
    v1::Participant {
        media: Some(v1::MediaState {
            participant_id: info.participant_id.clone(),
            audio_muted: info.audio_muted,
            video_muted: info.video_muted,
            screen_sharing: info.screen_sharing,
        }),
        participant_id: info.participant_id,
        display_name: info.display_name,
        moderator: info.moderator,
    }
}

/// The signal that tells a client about its room.
pub fn roster(event: RosterEvent) -> v1::Signal {
    roster_with(event, false)
}

/// The roster signal; `resumed` marks the welcome of a session that already existed.
pub fn roster_with(event: RosterEvent, resumed: bool) -> v1::Signal {
    v1::Signal::new(match event {
        RosterEvent::Welcome {
            participant_id,
            others,
            moderator,
            locked,
            hands,
        } => Kind::Welcome(v1::Welcome {
            participant_id,
            participants: others.into_iter().map(participant).collect(),
            resumed,
            moderator,
            locked,
            hands,
        }),
        RosterEvent::Joined(info) => Kind::ParticipantJoined(participant(info)),
        RosterEvent::JoinedTogether(infos) => Kind::ParticipantsJoined(v1::ParticipantsJoined {
            participants: infos.into_iter().map(participant).collect(),
        }),
        RosterEvent::Left {
            participant_id,
            reason,
        } => Kind::ParticipantLeft(v1::ParticipantLeft {
            participant_id,
            reason: match reason {
                LeaveReason::Left => v1::CloseReason::Left,
                LeaveReason::ConnectionLost => v1::CloseReason::ConnectionLost,
            } as i32,
        }),
        RosterEvent::Connection {
            participant_id,
            interrupted,
        } => Kind::Connection(v1::ParticipantConnection {
            participant_id,
            interrupted,
        }),
        RosterEvent::Media {
            participant_id,
            audio_muted,
            video_muted,
            screen_sharing,
        } => Kind::MediaState(v1::MediaState {
            participant_id,
            audio_muted,
            video_muted,
            screen_sharing,
        }),
        RosterEvent::Moderator { participant_id } => Kind::Role(v1::RoleChanged {
            participant_id,
            moderator: true,
        }),
        RosterEvent::Hands(participant_ids) => Kind::Hands(v1::Hands { participant_ids }),
        RosterEvent::Locked(locked) => Kind::RoomState(v1::RoomState { locked }),
    })
}

/// The signal that tells a client what a moderator did to, or asks of, it.
pub fn request(request: ModeratorRequest) -> v1::Signal {
    v1::Signal::new(Kind::Request(request_kind(request)))
}

/// A moderator's request on the wire.
pub fn request_kind(request: ModeratorRequest) -> v1::ModeratorRequest {
    use v1::moderator_request::Kind as RequestKind;
    let kind = match request {
        ModeratorRequest::Muted => RequestKind::Muted,
        ModeratorRequest::Unmute => RequestKind::Unmute,
        ModeratorRequest::CameraStopped => RequestKind::CameraStopped,
        ModeratorRequest::ScreenStopped => RequestKind::ScreenStopped,
    };
    v1::ModeratorRequest { kind: kind as i32 }
}

/// A moderator's request from the wire; `None` for one of no known kind.
pub fn moderator_request(kind: v1::moderator_request::Kind) -> Option<ModeratorRequest> {
    use v1::moderator_request::Kind as RequestKind;
    Some(match kind {
        RequestKind::Muted => ModeratorRequest::Muted,
        RequestKind::Unmute => ModeratorRequest::Unmute,
        RequestKind::CameraStopped => ModeratorRequest::CameraStopped,
        RequestKind::ScreenStopped => ModeratorRequest::ScreenStopped,
        RequestKind::Unspecified => return None,
    })
}

/// A moderator's action as the core knows it; `None` for one the client did not name.
pub fn action(action: v1::moderate::Action) -> Option<Action> {
    use v1::moderate::Action as Wire;
    Some(match action {
        Wire::Admit => Action::Admit,
        Wire::Deny => Action::Deny,
        Wire::Mute => Action::Mute,
        Wire::MuteAll => Action::MuteAll,
        Wire::AskUnmute => Action::AskUnmute,
        Wire::StopCamera => Action::StopCamera,
        Wire::StopScreen => Action::StopScreen,
        Wire::Remove => Action::Remove,
        Wire::MakeModerator => Action::MakeModerator,
        Wire::LowerHand => Action::LowerHand,
        Wire::Lock => Action::Lock,
        Wire::Unlock => Action::Unlock,
        Wire::End => Action::End,
        Wire::Unspecified => return None,
    })
}

//! The core's roster events as `treffpunkt.v1` signals for the clients.

use treffpunkt_proto::v1::{self, signal::Kind};

use crate::core::{LeaveReason, ParticipantInfo, RosterEvent};

fn participant(info: ParticipantInfo) -> v1::Participant {
    v1::Participant {
        media: Some(v1::MediaState {
            participant_id: info.participant_id.clone(),
            audio_muted: info.audio_muted,
            video_muted: info.video_muted,
            screen_sharing: info.screen_sharing,
        }),
        participant_id: info.participant_id,
        display_name: info.display_name,
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
        } => Kind::Welcome(v1::Welcome {
            participant_id,
            participants: others.into_iter().map(participant).collect(),
            resumed,
        }),
        RosterEvent::Joined(info) => Kind::ParticipantJoined(participant(info)),
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
    })
}

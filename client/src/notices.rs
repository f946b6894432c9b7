//! What the node tells a participant about the call beyond who comes and goes: who speaks,
//! which videos are paused and why, which of its own layers to send, and chat. The latest of
//! each is kept with the moment it arrived, so that a test can ask how long the node took.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use treffpunkt_proto::signalling::ServerMessage;
pub use treffpunkt_proto::signalling::VideoState;

/// A chat message from someone else in the room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chat {
    /// Their participant id.
    pub participant_id: String,
    /// Their name.
    pub name: String,
    /// What they wrote.
    pub text: String,
    /// When it arrived.
    pub at: Instant,
}

/// The latest of what the node said, each with when it arrived.
#[derive(Clone, Debug, Default)]
pub struct Notices {
    /// The dominant speaker's participant id.
    pub dominant_speaker: Option<(String, Instant)>,
    /// Every dominant speaker announced, in order: (participant id, when).
    pub speakers: Vec<(String, Instant)>,
    /// The state of each received video, by stream id (the publisher's participant id for a
    /// camera).
    pub video_states: HashMap<String, (VideoState, Instant)>,
    /// Which layers of each of its own sources (`camera`, `screen`) the node wants sent.
    pub publish_layers: HashMap<String, (Vec<bool>, Instant)>,
    /// Chat messages, oldest first.
    pub chat: Vec<Chat>,
}

/// The most speakers and chat messages kept.
const MAX_KEPT: usize = 10_000;

/// Notices shared between the signalling task, which records them, and the participant's
/// owner, who reads them.
#[derive(Clone, Debug, Default)]
pub(crate) struct NoticeBoard(Arc<Mutex<Notices>>);

impl NoticeBoard {
    /// A copy of what was said so far.
    pub fn snapshot(&self) -> Notices {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a message if it is a notice; returns the requested layers when it is a
    /// `publish-layers` for the camera.
    pub fn record(&self, message: &ServerMessage, now: Instant) -> Option<Vec<bool>> {
        let mut notices = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match message {
            ServerMessage::DominantSpeaker { participant_id } => {
                if notices.speakers.len() < MAX_KEPT {
                    notices.speakers.push((participant_id.clone(), now));
                }
                notices.dominant_speaker = Some((participant_id.clone(), now));
            }
            ServerMessage::VideoState { stream_id, state } => {
                notices
                    .video_states
                    .insert(stream_id.clone(), (*state, now));
            }
            ServerMessage::PublishLayers { source, active } => {
                notices
                    .publish_layers
                    .insert(source.clone(), (active.clone(), now));
                return (source == "camera").then(|| active.clone());
            }
            ServerMessage::Chat {
                participant_id,
                name,
                text,
            } if notices.chat.len() < MAX_KEPT => {
                notices.chat.push(Chat {
                    participant_id: participant_id.clone(),
                    name: name.clone(),
                    text: text.clone(),
                    at: now,
                });
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use treffpunkt_proto::signalling::CloseReason;

    use super::*;

    fn speaker(id: &str) -> ServerMessage {
        ServerMessage::DominantSpeaker {
            participant_id: id.into(),
        }
    }

    fn layers(source: &str, active: &[bool]) -> ServerMessage {
        ServerMessage::PublishLayers {
            source: source.into(),
            active: active.to_vec(),
        }
    }

    #[test]
    fn the_latest_of_each_notice_is_kept_with_its_time() {
        let board = NoticeBoard::default();
        let now = Instant::now();
        assert_eq!(board.record(&speaker("p1"), now), None);
        board.record(&speaker("p2"), now);
        board.record(
            &ServerMessage::VideoState {
                stream_id: "p1".into(),
                state: VideoState::PausedBandwidth,
            },
            now,
        );
        let camera = board.record(&layers("camera", &[true, false, true]), now);
        assert_eq!(camera, Some(vec![true, false, true]));
        assert_eq!(
            board.record(&layers("screen", &[false]), now),
            None,
            "only the camera is simulcast here"
        );
        board.record(
            &ServerMessage::Chat {
                participant_id: "p2".into(),
                name: "Ben".into(),
                text: "hallo".into(),
            },
            now,
        );
        let notices = board.snapshot();
        assert_eq!(notices.dominant_speaker, Some(("p2".to_owned(), now)));
        assert_eq!(notices.speakers.len(), 2);
        assert_eq!(
            notices.video_states.get("p1"),
            Some(&(VideoState::PausedBandwidth, now))
        );
        assert_eq!(notices.chat[0].text, "hallo");
        assert_eq!(notices.chat[0].name, "Ben");
        assert_eq!(notices.publish_layers.len(), 2);
    }

    #[test]
    fn messages_that_are_no_notices_change_nothing() {
        let board = NoticeBoard::default();
        let now = Instant::now();
        for message in [
            ServerMessage::Reconnect,
            ServerMessage::ParticipantLeft {
                participant_id: "p1".into(),
                reason: CloseReason::Left,
            },
            ServerMessage::error("room-full", "full"),
        ] {
            assert_eq!(board.record(&message, now), None);
        }
        let notices = board.snapshot();
        assert!(notices.dominant_speaker.is_none() && notices.speakers.is_empty());
        assert!(notices.video_states.is_empty() && notices.chat.is_empty());
    }
}

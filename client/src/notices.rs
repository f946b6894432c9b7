//! What the node tells a participant about the call beyond who comes and goes: who speaks,
//! which videos are paused and why, which of its own layers to send, and chat. The latest of
//! each is kept with the moment it arrived, so that a test can ask how long the node took.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

/// Whether a received video plays, as the node says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoState {
    /// It is forwarded.
    Playing,
    /// Not even its lowest layer fits the participant's downlink.
    PausedForBandwidth,
    /// Only the latest speakers' videos are sent in this room.
    PausedForLastN,
    /// A state this client does not know.
    Other(String),
}

impl VideoState {
    fn parse(state: &str) -> Self {
        match state {
            "playing" => Self::Playing,
            "paused-bandwidth" => Self::PausedForBandwidth,
            "paused-last-n" => Self::PausedForLastN,
            other => Self::Other(other.to_owned()),
        }
    }
}

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

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

impl NoticeBoard {
    /// A copy of what was said so far.
    pub fn snapshot(&self) -> Notices {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a signalling message if it is a notice; returns the requested layers when it
    /// is a `publish-layers` for the camera.
    pub fn record(&self, message: &Value, now: Instant) -> Option<Vec<bool>> {
        let mut notices = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match message["type"].as_str().unwrap_or_default() {
            "dominant-speaker" => {
                let id = text(&message["participantId"]);
                if notices.speakers.len() < MAX_KEPT {
                    notices.speakers.push((id.clone(), now));
                }
                notices.dominant_speaker = Some((id, now));
            }
            "video-state" => {
                let state = VideoState::parse(message["state"].as_str().unwrap_or_default());
                notices
                    .video_states
                    .insert(text(&message["streamId"]), (state, now));
            }
            "publish-layers" => {
                let source = text(&message["source"]);
                let active: Vec<bool> = message["active"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|flag| flag.as_bool().unwrap_or(true))
                    .collect();
                notices
                    .publish_layers
                    .insert(source.clone(), (active.clone(), now));
                return (source == "camera").then_some(active);
            }
            "chat" if notices.chat.len() < MAX_KEPT => {
                notices.chat.push(Chat {
                    participant_id: text(&message["participantId"]),
                    name: text(&message["name"]),
                    text: text(&message["text"]),
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
    use super::*;
    use serde_json::json;

    #[test]
    fn the_latest_of_each_notice_is_kept_with_its_time() {
        let board = NoticeBoard::default();
        let now = Instant::now();
        board.record(
            &json!({"type": "dominant-speaker", "participantId": "p1"}),
            now,
        );
        board.record(
            &json!({"type": "dominant-speaker", "participantId": "p2"}),
            now,
        );
        board.record(
            &json!({"type": "video-state", "streamId": "p1", "state": "paused-bandwidth"}),
            now,
        );
        let layers = board.record(
            &json!({"type": "publish-layers", "source": "camera", "active": [true, false, true]}),
            now,
        );
        assert_eq!(layers, Some(vec![true, false, true]));
        assert_eq!(
            board.record(
                &json!({"type": "publish-layers", "source": "screen", "active": [false]}),
                now
            ),
            None,
            "only the camera is simulcast here"
        );
        board.record(
            &json!({"type": "chat", "participantId": "p2", "name": "Ben", "text": "hallo"}),
            now,
        );
        let notices = board.snapshot();
        assert_eq!(notices.dominant_speaker, Some(("p2".to_owned(), now)));
        assert_eq!(notices.speakers.len(), 2);
        assert_eq!(
            notices.video_states.get("p1"),
            Some(&(VideoState::PausedForBandwidth, now))
        );
        assert_eq!(notices.chat[0].text, "hallo");
        assert_eq!(notices.publish_layers.len(), 2);
    }
}

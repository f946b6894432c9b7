//! The core's decisions carried out: down-tracks added to and removed from subscribers'
//! connections, keyframes asked of publishers, and what clients are told (who came and went,
//! which layers to send, paused videos, the dominant speaker, chat, the lobby and what
//! moderators did), and sessions a moderator ended.

use std::time::Instant;

use tracing::{debug, warn};
use treffpunkt_proto::v1::{self, signal::Kind as SignalKind};

use super::{Node, signal};
use crate::core::{Ending, LeaveReason, Output, VideoState};

impl Node {
    /// Carries out everything the core decided since it was last asked.
    pub(super) fn apply_core_outputs(&mut self, now: Instant) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Roster { to, event } => self.signal(to, signal::roster(event)),
                Output::Relay { link, message } => self.relay_event(link, message),
                Output::AddDownTrack(track) => {
                    let subscriber = track.subscriber;
                    if let Some(session) = self.sessions.get_mut(&subscriber)
                        && let Err(error) = session.add_down_track(&track)
                    {
                        warn!(%error, "could not add a down-track");
                    }
                    self.touch(subscriber);
                }
                Output::RemoveDownTrack { subscriber, ssrc } => {
                    if let Some(session) = self.sessions.get_mut(&subscriber)
                        && let Err(error) = session.remove_down_track(ssrc)
                    {
                        warn!(%error, "could not remove a down-track");
                    }
                    self.touch(subscriber);
                }
                Output::RequestKeyframe { publisher, ssrc } => {
                    if let Some(session) = self.sessions.get_mut(&publisher)
                        && let Err(error) = session.request_keyframe(now, ssrc)
                    {
                        debug!(%error, "could not request a keyframe");
                    }
                    self.touch(publisher);
                }
                Output::PublisherLayers {
                    publisher,
                    source,
                    active,
                } => self.signal(
                    publisher,
                    v1::Signal::new(SignalKind::PublishLayers(v1::PublishLayers {
                        source: source.as_str().to_owned(),
                        active,
                    })),
                ),
                Output::Video {
                    to,
                    stream_id,
                    state,
                } => {
                    let state = match state {
                        VideoState::Playing => v1::video_state::State::Playing,
                        VideoState::PausedForBandwidth => v1::video_state::State::PausedBandwidth,
                        VideoState::PausedForLastN => v1::video_state::State::PausedLastN,
                    };
                    self.signal(
                        to,
                        v1::Signal::new(SignalKind::VideoState(v1::VideoState {
                            stream_id,
                            state: state as i32,
                        })),
                    );
                }
                Output::DominantSpeaker { to, participant_id } => self.signal(
                    to,
                    v1::Signal::new(SignalKind::DominantSpeaker(v1::DominantSpeaker {
                        participant_id,
                    })),
                ),
                Output::Chat { to, message } => self.signal(
                    to,
                    v1::Signal::new(SignalKind::Chat(v1::ChatMessage {
                        participant_id: message.from,
                        display_name: message.display_name,
                        text: message.text,
                    })),
                ),
                Output::Waiting {
                    to,
                    moderator_present,
                } => self.signal(
                    to,
                    v1::Signal::new(SignalKind::Lobby(v1::Lobby { moderator_present })),
                ),
                Output::Knocking { to, waiting } => self.signal(
                    to,
                    v1::Signal::new(SignalKind::Knocking(v1::Knocking {
                        waiting: waiting
                            .into_iter()
                            .map(|(participant_id, display_name)| v1::Knock {
                                participant_id,
                                display_name,
                            })
                            .collect(),
                    })),
                ),
                Output::Request { to, request } => self.signal(to, signal::request(request)),
                Output::Close { peer, reason } => {
                    let (reason, detail) = match reason {
                        Ending::Removed => (v1::CloseReason::Removed, "removed by a moderator"),
                        Ending::Ended => (v1::CloseReason::Ended, "a moderator ended the meeting"),
                        Ending::Denied => (v1::CloseReason::Denied, "not let in"),
                    };
                    // The client hears why from the control plane, which the close reaches.
                    self.close_session(now, peer, LeaveReason::Left, Some(reason), detail);
                }
            }
        }
    }
}

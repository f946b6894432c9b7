//! The media node's pure core: rooms, participants, publications, down-tracks, the forwarder
//! and the choice of what each subscriber receives.
//!
//! [`Core`] is a plain struct driven by events with the time passed in. It does no I/O, holds no
//! locks and never looks at a clock. The transport feeds it what happened (someone joined, a
//! track or simulcast layer opened, a packet arrived, a subscriber asked for a keyframe, a
//! subscriber's bandwidth estimate moved, a client said how large it shows a video) and carries
//! out what it decides, read from [`Core::poll_output`]: tell people who came and went, add or
//! remove a down-track, ask a publisher for a keyframe or to start or stop a simulcast layer,
//! tell a subscriber that a video is paused, announce the dominant speaker, pass on chat.
//!
//! The parts:
//!
//! - [`forwarder`]: one down-track's packet decisions and header rewriting, continuous across
//!   simulcast layer switches;
//! - [`allocation`]: how one subscriber's bandwidth is shared among its videos;
//! - [`speaker`]: the dominant speaker of a room, from audio levels;
//! - [`vp8`]: what the forwarder reads of (and rewrites in) a VP8 payload;
//! - [`keyframe`]: keyframe requests, rate-limited;
//! - `publication`: the layers and subscriptions of one published track.
//!
//! Every [`TICK`] the core measures each layer's bitrate, re-evaluates the dominant speaker and
//! re-allocates every subscriber's downlink. The hot path is [`Core::forward`]: one packet in,
//! the list of subscribers with the rewritten header for each, written into a buffer the caller
//! reuses, so no allocation per packet.

pub mod allocation;
pub mod codec;
pub mod forwarder;
pub mod keyframe;
mod publication;
pub mod speaker;
pub mod vp8;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use allocation::{Choice, Demand, Paused};
pub use codec::{Codec, MediaKind};
pub use forwarder::{Forwarder, PacketMeta, Rewrite};
use publication::{Publication, Subscription};
use speaker::SpeakerDetector;

/// A participant's connection on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// One track a participant publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicationId(u64);

/// How long a video subscriber may wait for a keyframe of the layer it switches to before it is
/// asked for again (the request or the keyframe itself may have been lost).
const KEYFRAME_RETRY: Duration = Duration::from_secs(1);
/// How often layers are measured, the speaker evaluated and bandwidth shared out.
pub const TICK: Duration = Duration::from_millis(200);
/// The downlink assumed for a subscriber whose client has not reported any congestion feedback.
pub const DEFAULT_ESTIMATE: u64 = 1_000_000;
/// The most video sizes remembered per participant.
const MAX_VIEWPORTS: usize = 128;
/// The longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 1000;
/// How many chat messages one participant may send within [`CHAT_WINDOW`].
const CHAT_BURST: usize = 10;
const CHAT_WINDOW: Duration = Duration::from_secs(10);

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
    },
    /// Someone came in.
    Joined(ParticipantInfo),
    /// Someone left.
    Left {
        /// Who.
        participant_id: String,
        /// Why.
        reason: LeaveReason,
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
}

/// A track (or one simulcast layer of it) that began to arrive from a publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishedLayer {
    /// The transport's key for the track; the layers of one track share it.
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

/// What the core decided; the transport carries it out.
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

#[derive(Debug)]
struct Participant {
    room: String,
    info: ParticipantInfo,
    publications: Vec<PublicationId>,
    /// The downlink estimate from the congestion control feedback of its client.
    estimate: Option<u64>,
    /// How far its estimate may grow beyond what arrives: enough for the next improvement of
    /// what it receives (see [`allocation::next_step`]).
    wanted_estimate: Option<u64>,
    /// What the videos it is sent already need, when that is more than its estimate.
    catch_up_estimate: Option<u64>,
    /// It wants no video at all.
    audio_only: bool,
    /// The height at which it shows each video, by stream id; 0 when it shows it nowhere.
    viewports: HashMap<String, u32>,
    /// When it sent its latest chat messages.
    chat_times: VecDeque<Instant>,
}

#[derive(Debug, Default)]
struct Room {
    members: Vec<PeerId>,
    speakers: SpeakerDetector,
    last_n: u32,
}

/// What [`Core::forward`] tells the transport about a packet it forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// Whether the packet is audio.
    pub audio: bool,
    /// The VP8 payload descriptor, for rewriting picture ids in the payload.
    pub vp8: Option<vp8::Vp8Descriptor>,
    /// The packet's picture id and TL0PICIDX as they arrived.
    pub picture_id: Option<u16>,
    /// See `picture_id`.
    pub tl0_picture_index: Option<u8>,
}

/// The rooms of one media node.
#[derive(Debug)]
pub struct Core {
    rooms: HashMap<String, Room>,
    participants: HashMap<PeerId, Participant>,
    publications: HashMap<PublicationId, Publication>,
    /// (publisher, publisher SSRC) -> publication and layer.
    published: HashMap<(PeerId, u32), (PublicationId, usize)>,
    /// (subscriber, down-track SSRC) -> publication.
    subscribed: HashMap<(PeerId, u32), PublicationId>,
    next_publication: u64,
    /// State of a xorshift generator for down-track SSRCs: the core stays deterministic for a
    /// given seed, which the tests rely on.
    ssrc_state: u64,
    /// When the next [`TICK`] is due, once there is anything to tick for.
    next_tick: Option<Instant>,
    last_tick: Option<Instant>,
    outputs: VecDeque<Output>,
}

impl Core {
    /// An empty node. `seed` makes the down-track SSRCs unpredictable between runs.
    pub fn new(seed: u64) -> Self {
        Self {
            rooms: HashMap::new(),
            participants: HashMap::new(),
            publications: HashMap::new(),
            published: HashMap::new(),
            subscribed: HashMap::new(),
            next_publication: 0,
            ssrc_state: seed | 1,
            next_tick: None,
            last_tick: None,
            outputs: VecDeque::new(),
        }
    }

    /// The next thing to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Rooms with at least one participant.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Participants on the node.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Tracks published on the node.
    pub fn publication_count(&self) -> usize {
        self.publications.len()
    }

    /// Down-tracks on the node.
    pub fn down_track_count(&self) -> usize {
        self.subscribed.len()
    }

    /// The room of a participant.
    pub fn room_of(&self, peer: PeerId) -> Option<&str> {
        self.participants.get(&peer).map(|p| p.room.as_str())
    }

    /// What a participant is told when it comes back: its own id and everyone else.
    pub fn roster_for(&self, peer: PeerId) -> Option<RosterEvent> {
        let participant = self.participants.get(&peer)?;
        Some(RosterEvent::Welcome {
            participant_id: participant.info.participant_id.clone(),
            others: self
                .room_members(&participant.room)
                .iter()
                .filter(|other| **other != peer)
                .filter_map(|other| self.participants.get(other))
                .map(|other| other.info.clone())
                .collect(),
        })
    }

    /// Every room with its number of participants.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, usize)> {
        self.rooms
            .iter()
            .map(|(room, state)| (room.as_str(), state.members.len()))
    }

    /// The participants of `room`.
    pub fn room_members(&self, room: &str) -> &[PeerId] {
        self.rooms
            .get(room)
            .map_or(&[], |room| room.members.as_slice())
    }

    /// The dominant speaker of `room`, as last announced.
    pub fn dominant_speaker(&self, room: &str) -> Option<PeerId> {
        self.rooms.get(room)?.speakers.dominant()
    }

    /// The layer a subscriber's down-track forwards now and the one it is switching to.
    pub fn down_track_layers(
        &self,
        subscriber: PeerId,
        ssrc: u32,
    ) -> Option<(Option<usize>, Option<usize>)> {
        let id = self.subscribed.get(&(subscriber, ssrc))?;
        let subscription = self
            .publications
            .get(id)?
            .subscriptions
            .iter()
            .find(|s| s.subscriber == subscriber)?;
        Some((
            subscription.forwarder.current(),
            subscription.forwarder.target(),
        ))
    }

    fn next_ssrc(&mut self, subscriber: PeerId) -> u32 {
        loop {
            // xorshift64
            let mut x = self.ssrc_state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.ssrc_state = x;
            let ssrc = (x >> 32) as u32;
            let taken = ssrc == 0
                || self.subscribed.contains_key(&(subscriber, ssrc))
                || self.published.contains_key(&(subscriber, ssrc));
            if !taken {
                return ssrc;
            }
        }
    }

    /// Admits `peer` to a room: it is welcomed with the list of the others, the others learn
    /// of it, and it is subscribed to everything already published there.
    pub fn join(&mut self, peer: PeerId, request: JoinRequest) -> Result<(), JoinError> {
        if self.participants.contains_key(&peer) {
            return Err(JoinError::AlreadyJoined);
        }
        let members = self.room_members(&request.room).len();
        if request.max_participants > 0 && members >= request.max_participants as usize {
            return Err(JoinError::RoomFull {
                limit: request.max_participants,
            });
        }
        let info = ParticipantInfo {
            participant_id: request.participant_id,
            display_name: request.display_name,
            audio_muted: false,
            video_muted: false,
            screen_sharing: false,
        };
        let others: Vec<PeerId> = self.room_members(&request.room).to_vec();
        self.outputs.push_back(Output::Roster {
            to: peer,
            event: RosterEvent::Welcome {
                participant_id: info.participant_id.clone(),
                others: others
                    .iter()
                    .filter_map(|other| self.participants.get(other))
                    .map(|other| other.info.clone())
                    .collect(),
            },
        });
        for other in &others {
            self.outputs.push_back(Output::Roster {
                to: *other,
                event: RosterEvent::Joined(info.clone()),
            });
        }
        let room = self.rooms.entry(request.room.clone()).or_default();
        room.members.push(peer);
        room.last_n = request.last_n;
        if let Some(speaker) = room.speakers.dominant()
            && let Some(speaker) = self.participants.get(&speaker)
        {
            self.outputs.push_back(Output::DominantSpeaker {
                to: peer,
                participant_id: speaker.info.participant_id.clone(),
            });
        }
        self.participants.insert(
            peer,
            Participant {
                room: request.room,
                info,
                publications: Vec::new(),
                estimate: None,
                wanted_estimate: None,
                catch_up_estimate: None,
                audio_only: false,
                viewports: HashMap::new(),
                chat_times: VecDeque::new(),
            },
        );
        let existing: Vec<PublicationId> = others
            .iter()
            .filter_map(|other| self.participants.get(other))
            .flat_map(|other| other.publications.iter().copied())
            .collect();
        for publication in existing {
            self.subscribe(peer, publication);
        }
        Ok(())
    }

    fn subscribe(&mut self, subscriber: PeerId, id: PublicationId) {
        let ssrc = self.next_ssrc(subscriber);
        let Some(publication) = self.publications.get_mut(&id) else {
            return;
        };
        let video = publication.codec.kind() == MediaKind::Video;
        let clock_rate = if video { 90_000 } else { 48_000 };
        publication.subscriptions.push(Subscription {
            subscriber,
            forwarder: Forwarder::new(ssrc, clock_rate, video),
            ready: false,
            waiting_since: None,
            choice: Err(Paused::NotWanted),
            resume_not_before: None,
            resume_backoff: publication::RESUME_BACKOFF,
            resumed_at: None,
            rise_not_before: None,
            rise_backoff: publication::RISE_BACKOFF,
            rose_at: None,
        });
        self.outputs.push_back(Output::AddDownTrack(
            publication.down_track(subscriber, ssrc),
        ));
        self.subscribed.insert((subscriber, ssrc), id);
    }

    /// Removes `peer` from its room and frees everything that belonged to it: its
    /// publications (and every down-track of them) and its own down-tracks.
    pub fn leave(&mut self, peer: PeerId, reason: LeaveReason) {
        let Some(participant) = self.participants.remove(&peer) else {
            return;
        };
        for id in &participant.publications {
            self.unpublish_id(*id);
        }
        // Its own subscriptions.
        let own: Vec<(u32, PublicationId)> = self
            .subscribed
            .iter()
            .filter(|((subscriber, _), _)| *subscriber == peer)
            .map(|((_, ssrc), id)| (*ssrc, *id))
            .collect();
        for (ssrc, id) in own {
            self.subscribed.remove(&(peer, ssrc));
            if let Some(publication) = self.publications.get_mut(&id) {
                publication.subscriptions.retain(|s| s.subscriber != peer);
            }
        }
        let Some(room) = self.rooms.get_mut(&participant.room) else {
            return;
        };
        room.members.retain(|member| *member != peer);
        room.speakers.forget(peer);
        for other in &room.members {
            self.outputs.push_back(Output::Roster {
                to: *other,
                event: RosterEvent::Left {
                    participant_id: participant.info.participant_id.clone(),
                    reason,
                },
            });
        }
        if room.members.is_empty() {
            self.rooms.remove(&participant.room);
        }
    }

    /// Records a participant's microphone, camera and screen state and tells the others.
    pub fn set_media_state(
        &mut self,
        peer: PeerId,
        audio_muted: bool,
        video_muted: bool,
        screen_sharing: bool,
    ) {
        let Some(participant) = self.participants.get_mut(&peer) else {
            return;
        };
        participant.info.audio_muted = audio_muted;
        participant.info.video_muted = video_muted;
        participant.info.screen_sharing = screen_sharing;
        let event = RosterEvent::Media {
            participant_id: participant.info.participant_id.clone(),
            audio_muted,
            video_muted,
            screen_sharing,
        };
        let room = participant.room.clone();
        for other in self.room_members(&room).to_vec() {
            if other != peer {
                self.outputs.push_back(Output::Roster {
                    to: other,
                    event: event.clone(),
                });
            }
        }
    }

    /// A subscriber's downlink estimate, in bits per second, from its congestion control
    /// feedback. The next tick shares it out.
    pub fn set_estimate(&mut self, peer: PeerId, bits_per_second: u64) {
        if let Some(participant) = self.participants.get_mut(&peer) {
            participant.estimate = Some(bits_per_second);
        }
    }

    /// What `peer`'s downlink estimate would need to reach for the next improvement of what it
    /// receives (a paused video resumed, a video moved up), if any.
    pub fn wanted_estimate(&self, peer: PeerId) -> Option<u64> {
        self.participants.get(&peer)?.wanted_estimate
    }

    /// What the videos `peer` is sent already need (with headroom), when that is more than its
    /// estimate: videos that never played are sent before they fit, and the estimate may grow
    /// that far without a probe.
    pub fn catch_up_estimate(&self, peer: PeerId) -> Option<u64> {
        self.participants.get(&peer)?.catch_up_estimate
    }

    /// How tall a subscriber shows the video of `stream_id`, in pixels; 0 when it shows it
    /// nowhere.
    pub fn set_viewport(&mut self, peer: PeerId, stream_id: &str, height: u32) {
        let Some(participant) = self.participants.get_mut(&peer) else {
            return;
        };
        // A client may say so before the video arrives; the map is bounded so that it cannot be
        // grown at will.
        if participant.viewports.len() >= MAX_VIEWPORTS
            && !participant.viewports.contains_key(stream_id)
        {
            return;
        }
        participant.viewports.insert(stream_id.to_owned(), height);
    }

    /// A participant chose to receive audio only, or video again.
    pub fn set_audio_only(&mut self, peer: PeerId, audio_only: bool) {
        if let Some(participant) = self.participants.get_mut(&peer) {
            participant.audio_only = audio_only;
        }
    }

    /// A chat message from `peer` for everyone else in its room. It is passed on, not kept.
    pub fn chat(&mut self, now: Instant, peer: PeerId, text: &str) -> Result<(), ChatError> {
        let Some(participant) = self.participants.get_mut(&peer) else {
            return Err(ChatError::NotJoined);
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(ChatError::Empty);
        }
        if text.chars().count() > MAX_CHAT_CHARS {
            return Err(ChatError::TooLong);
        }
        let times = &mut participant.chat_times;
        while times
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= CHAT_WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= CHAT_BURST {
            return Err(ChatError::TooFast);
        }
        times.push_back(now);
        let message = ChatMessage {
            from: participant.info.participant_id.clone(),
            display_name: participant.info.display_name.clone(),
            text: text.to_owned(),
        };
        let room = participant.room.clone();
        for other in self.room_members(&room).to_vec() {
            if other != peer {
                self.outputs.push_back(Output::Chat {
                    to: other,
                    message: message.clone(),
                });
            }
        }
        Ok(())
    }

    /// The audio level (RFC 6464) of a packet `peer` sent.
    pub fn audio_level(&mut self, now: Instant, peer: PeerId, level: u8) {
        let Some(participant) = self.participants.get(&peer) else {
            return;
        };
        if let Some(room) = self.rooms.get_mut(&participant.room) {
            room.speakers.level(now, peer, level);
        }
    }

    /// A track, or one simulcast layer of it, began to arrive. Everyone else in the room is
    /// subscribed to a new track. Idempotent: the same SSRC opening again (after a
    /// renegotiation) changes nothing.
    pub fn publish(
        &mut self,
        now: Instant,
        peer: PeerId,
        layer: PublishedLayer,
    ) -> Option<PublicationId> {
        if let Some((id, _)) = self.published.get(&(peer, layer.ssrc)) {
            return Some(*id);
        }
        let participant = self.participants.get(&peer)?;
        self.next_tick.get_or_insert(now + TICK);
        let existing = participant.publications.iter().copied().find(|id| {
            self.publications
                .get(id)
                .is_some_and(|p| p.track == layer.track)
        });
        if let Some(id) = existing {
            let publication = self.publications.get_mut(&id)?;
            let slot = publication.layers.get_mut(layer.layer)?;
            if let Some(old) = slot.ssrc.replace(layer.ssrc) {
                self.published.remove(&(peer, old));
            }
            self.published.insert((peer, layer.ssrc), (id, layer.layer));
            return Some(id);
        }
        if layer.layer >= layer.layer_count.max(1) {
            return None;
        }
        let id = PublicationId(self.next_publication);
        self.next_publication += 1;
        let participant_id = participant.info.participant_id.clone();
        let stream_id = match layer.source {
            Source::Screen => format!("{participant_id}:screen"),
            Source::Microphone | Source::Camera => participant_id.clone(),
        };
        let track_id = format!("{participant_id}-{}", layer.source.as_str());
        // A second track of the same source gets a distinct id.
        let track_id = if self
            .publications
            .values()
            .any(|p| p.publisher == peer && p.track_id == track_id)
        {
            format!("{track_id}-{}", id.0)
        } else {
            track_id
        };
        let mut publication = Publication::new(
            peer,
            layer.track,
            layer.codec,
            layer.source,
            stream_id,
            track_id,
            layer.layer_count,
        );
        publication.layers[layer.layer].ssrc = Some(layer.ssrc);
        let room = participant.room.clone();
        self.participants.get_mut(&peer)?.publications.push(id);
        self.publications.insert(id, publication);
        self.published.insert((peer, layer.ssrc), (id, layer.layer));
        for other in self.room_members(&room).to_vec() {
            if other != peer {
                self.subscribe(other, id);
            }
        }
        Some(id)
    }

    fn unpublish_id(&mut self, id: PublicationId) {
        let Some(publication) = self.publications.remove(&id) else {
            return;
        };
        for layer in &publication.layers {
            if let Some(ssrc) = layer.ssrc {
                self.published.remove(&(publication.publisher, ssrc));
            }
        }
        for subscription in publication.subscriptions {
            let ssrc = subscription.forwarder.ssrc();
            self.subscribed.remove(&(subscription.subscriber, ssrc));
            if let Some(subscriber) = self.participants.get_mut(&subscription.subscriber) {
                subscriber.viewports.remove(&publication.stream_id);
            }
            self.outputs.push_back(Output::RemoveDownTrack {
                subscriber: subscription.subscriber,
                ssrc,
            });
        }
    }

    /// A down-track is negotiated and its subscriber connected: forwarding starts, video with
    /// a keyframe request to the publisher.
    pub fn down_track_ready(&mut self, now: Instant, subscriber: PeerId, ssrc: u32) {
        let Some(id) = self.subscribed.get(&(subscriber, ssrc)).copied() else {
            return;
        };
        let Some(publication) = self.publications.get_mut(&id) else {
            return;
        };
        let Some(index) = publication
            .subscriptions
            .iter()
            .position(|s| s.subscriber == subscriber)
        else {
            return;
        };
        let subscription = &mut publication.subscriptions[index];
        if subscription.ready {
            return;
        }
        subscription.ready = true;
        if let Some(layer) = publication.live_layer_near(now, 0) {
            publication.subscriptions[index]
                .forwarder
                .set_target(Some(layer));
        }
        request_keyframe_if_waiting(now, publication, index, &mut self.outputs);
    }

    /// Takes `count` sequence numbers for padding-only packets that probe `subscriber`'s line,
    /// on one of its video down-tracks that has sent before (one being forwarded now if there
    /// is one) and that the transport can send on (`sendable`): returns that down-track's SSRC,
    /// the first sequence number and the timestamp to send with. `None` when the subscriber has
    /// no such down-track.
    pub fn probe_padding(
        &mut self,
        subscriber: PeerId,
        count: u16,
        sendable: impl Fn(u32) -> bool,
    ) -> Option<(u32, u16, u32)> {
        let mut candidates: Vec<(bool, u32, PublicationId)> = self
            .subscribed
            .iter()
            .filter(|((peer, ssrc), _)| *peer == subscriber && sendable(*ssrc))
            .filter_map(|(&(_, ssrc), &id)| {
                let publication = self.publications.get(&id)?;
                if publication.codec.kind() != MediaKind::Video {
                    return None;
                }
                let subscription = publication
                    .subscriptions
                    .iter()
                    .find(|s| s.subscriber == subscriber && s.ready)?;
                Some((subscription.forwarder.current().is_none(), ssrc, id))
            })
            .collect();
        // Forwarding ones first; among equals, the same one every time.
        candidates.sort_unstable();
        candidates.into_iter().find_map(|(_, ssrc, id)| {
            let forwarder = &mut self
                .publications
                .get_mut(&id)?
                .subscriptions
                .iter_mut()
                .find(|s| s.subscriber == subscriber)?
                .forwarder;
            let (first, timestamp) = forwarder.take_padding(count)?;
            Some((ssrc, first, timestamp))
        })
    }

    /// A subscriber asked for a keyframe on one of its down-tracks (PLI or FIR).
    pub fn keyframe_requested(&mut self, now: Instant, subscriber: PeerId, ssrc: u32) {
        let Some(id) = self.subscribed.get(&(subscriber, ssrc)).copied() else {
            return;
        };
        let Some(publication) = self.publications.get_mut(&id) else {
            return;
        };
        let layer = publication
            .subscriptions
            .iter()
            .find(|s| s.subscriber == subscriber)
            .and_then(|s| s.forwarder.current().or(s.forwarder.target()));
        if let Some(layer) = layer {
            request_layer_keyframe(now, publication, layer, &mut self.outputs);
        }
    }

    /// Forwards one packet of `publisher`'s SSRC `ssrc`: for each subscriber that gets it,
    /// pushes the subscriber and the rewritten header to `out` (cleared first). `payload` is
    /// the RTP payload, read for keyframes and picture ids. Returns `None` when the SSRC is not
    /// published.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        now: Instant,
        publisher: PeerId,
        ssrc: u32,
        sequence_number: u16,
        timestamp: u32,
        payload: &[u8],
        out: &mut Vec<(PeerId, Rewrite)>,
    ) -> Option<Forwarded> {
        out.clear();
        let (id, layer) = *self.published.get(&(publisher, ssrc))?;
        let publication = self.publications.get_mut(&id)?;
        let mut forwarded = Forwarded {
            audio: publication.codec.kind() == MediaKind::Audio,
            vp8: None,
            picture_id: None,
            tl0_picture_index: None,
        };
        let keyframe = match publication.codec {
            Codec::Vp8 => {
                let descriptor = vp8::parse(payload);
                if let Some(descriptor) = descriptor {
                    forwarded.picture_id = descriptor.picture_id.map(|(id, _)| id);
                    forwarded.tl0_picture_index = descriptor.tl0_picture_index;
                    if let Some((_, height)) = descriptor.dimensions {
                        publication.layers[layer].height = Some(u32::from(height));
                    }
                }
                forwarded.vp8 = descriptor;
                descriptor.is_some_and(|d| d.keyframe)
            }
            codec => codec.starts_keyframe(payload),
        };
        // Payload plus RTP header and SRTP tag, roughly what the subscriber's estimate counts.
        publication.layers[layer].received(now, payload.len() + 24);
        let meta = PacketMeta {
            layer,
            sequence_number,
            timestamp,
            keyframe,
            padding_only: payload.is_empty(),
            picture_id: forwarded.picture_id,
            tl0_picture_index: forwarded.tl0_picture_index,
        };
        for subscription in &mut publication.subscriptions {
            if !subscription.ready {
                continue;
            }
            if let Some(rewrite) = subscription.forwarder.forward(now, &meta) {
                out.push((subscription.subscriber, rewrite));
            }
            if !subscription.forwarder.waiting_for_keyframe() {
                subscription.waiting_since = None;
            }
        }
        Some(forwarded)
    }

    /// When [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keyframes = self
            .publications
            .values()
            .flat_map(|publication| publication.layers.iter())
            .filter_map(|layer| layer.keyframes.deadline())
            .min();
        [keyframes, self.next_tick].into_iter().flatten().min()
    }

    /// Sends held keyframe requests that are due, and every [`TICK`] measures the layers,
    /// evaluates the speakers and shares out every subscriber's bandwidth.
    pub fn handle_timeout(&mut self, now: Instant) {
        for publication in self.publications.values_mut() {
            for layer in &mut publication.layers {
                if layer.keyframes.poll(now)
                    && let Some(ssrc) = layer.ssrc
                {
                    self.outputs.push_back(Output::RequestKeyframe {
                        publisher: publication.publisher,
                        ssrc,
                    });
                }
            }
        }
        if self.next_tick.is_some_and(|at| at <= now) {
            self.tick(now);
            self.next_tick = (!self.publications.is_empty()).then(|| now + TICK);
        }
    }

    fn tick(&mut self, now: Instant) {
        let elapsed = self
            .last_tick
            .map_or(TICK, |last| now.saturating_duration_since(last));
        self.last_tick = Some(now);
        for publication in self.publications.values_mut() {
            for layer in &mut publication.layers {
                layer.measure(elapsed);
            }
        }
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.evaluate_speaker(now, &room);
            self.allocate_room(now, &room);
        }
        self.retry_keyframes(now);
    }

    fn evaluate_speaker(&mut self, now: Instant, room: &str) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(speaker) = state.speakers.evaluate(now) else {
            return;
        };
        let Some(participant) = self.participants.get(&speaker) else {
            return;
        };
        for member in &state.members {
            self.outputs.push_back(Output::DominantSpeaker {
                to: *member,
                participant_id: participant.info.participant_id.clone(),
            });
        }
    }

    /// Shares out each member's downlink among the videos of the room, then tells publishers
    /// which layers somebody needs.
    fn allocate_room(&mut self, now: Instant, room: &str) {
        let Some(state) = self.rooms.get(room) else {
            return;
        };
        let members = state.members.clone();
        let last_n = state.last_n as usize;
        let dominant = state.speakers.dominant();
        let priority = |publication: &Publication| -> u32 {
            match publication.source {
                Source::Screen => 0,
                _ if Some(publication.publisher) == dominant => 1,
                _ => state
                    .speakers
                    .recency(publication.publisher)
                    .map_or(1000, |rank| 2 + rank as u32),
            }
        };
        // Every video of the room, by publication.
        let videos = self.publications_of(&members, MediaKind::Video);
        let priorities: HashMap<PublicationId, u32> = videos
            .iter()
            .filter_map(|id| Some((*id, priority(self.publications.get(id)?))))
            .collect();
        let audio = self.publications_of(&members, MediaKind::Audio);
        // Which layers of which publication somebody wants.
        let mut wanted: HashMap<PublicationId, Vec<bool>> = videos
            .iter()
            .filter_map(|id| Some((*id, vec![false; self.publications.get(id)?.layers.len()])))
            .collect();
        for subscriber in members {
            let Some(participant) = self.participants.get(&subscriber) else {
                continue;
            };
            let audio_cost: u64 = audio
                .iter()
                .filter_map(|id| self.publications.get(id))
                .filter(|p| p.publisher != subscriber)
                .map(Publication::audio_cost)
                .sum();
            let budget = participant
                .estimate
                .unwrap_or(DEFAULT_ESTIMATE)
                .saturating_sub(audio_cost);
            // (publication, its usable layers) per demand, in the same order.
            let mut targets: Vec<(PublicationId, Vec<usize>)> = Vec::new();
            let mut demands: Vec<Demand> = Vec::new();
            for id in &videos {
                let Some(publication) = self.publications.get(id) else {
                    continue;
                };
                let Some(subscription) = publication
                    .subscriptions
                    .iter()
                    .find(|s| s.subscriber == subscriber && s.ready)
                else {
                    continue;
                };
                let usable = publication.usable_layers(now);
                let viewport = participant.viewports.get(&publication.stream_id).copied();
                let current = subscription
                    .choice
                    .ok()
                    .and_then(|layer| usable.iter().position(|(index, _)| *index == layer));
                demands.push(Demand {
                    priority: priorities.get(id).copied().unwrap_or(1000),
                    layers: usable.iter().map(|(_, info)| *info).collect(),
                    viewport_height: viewport.filter(|height| *height > 0),
                    wanted: !participant.audio_only && viewport != Some(0),
                    current,
                    exempt_from_last_n: publication.source == Source::Screen,
                    held: subscription.held(now),
                    may_rise: subscription.may_rise(now),
                    resuming: subscription.choice == Err(Paused::Bandwidth),
                });
                targets.push((*id, usable.iter().map(|(index, _)| *index).collect()));
            }
            let choices = allocation::allocate(budget, last_n, &demands);
            let used: u64 = demands
                .iter()
                .zip(&choices)
                .filter_map(|(demand, choice)| {
                    Some(demand.layers.get(*choice.as_ref().ok()?)?.bitrate)
                })
                .sum();
            let improvement =
                allocation::next_step(&demands, &choices).map(|step| audio_cost + used + step);
            // Videos that never played go out even before they fit (see `allocation`): the
            // estimate has to catch up with them, or the pacer holds them back for good. They
            // are on their way already, so there is nothing to probe for.
            let catch_up = (used > budget).then(|| audio_cost + used + used / 4);
            if let Some(participant) = self.participants.get_mut(&subscriber) {
                participant.wanted_estimate = improvement;
                participant.catch_up_estimate = catch_up;
            }
            for ((id, usable), choice) in targets.into_iter().zip(choices) {
                let choice: Choice = choice.map(|position| usable[position]);
                if let (Ok(layer), Some(flags)) = (choice, wanted.get_mut(&id)) {
                    flags[layer] = true;
                }
                self.apply_choice(now, id, subscriber, choice);
            }
        }
        for (id, flags) in wanted {
            let Some(publication) = self.publications.get_mut(&id) else {
                continue;
            };
            let mut changed = false;
            for (layer, wanted) in publication.layers.iter_mut().zip(flags) {
                changed |= layer.want(now, wanted).is_some();
            }
            if changed {
                self.outputs.push_back(Output::PublisherLayers {
                    publisher: publication.publisher,
                    source: publication.source,
                    active: publication
                        .layers
                        .iter()
                        .map(|layer| layer.active)
                        .collect(),
                });
            }
        }
    }

    /// The publications of `kind` that `members` publish.
    fn publications_of(&self, members: &[PeerId], kind: MediaKind) -> Vec<PublicationId> {
        members
            .iter()
            .filter_map(|member| self.participants.get(member))
            .flat_map(|member| member.publications.iter().copied())
            .filter(|id| {
                self.publications
                    .get(id)
                    .is_some_and(|p| p.codec.kind() == kind)
            })
            .collect()
    }

    /// Points one subscriber's down-track at the chosen layer and tells the subscriber when its
    /// video pauses or resumes.
    fn apply_choice(
        &mut self,
        now: Instant,
        id: PublicationId,
        subscriber: PeerId,
        choice: Choice,
    ) {
        let Some(publication) = self.publications.get_mut(&id) else {
            return;
        };
        let Some(index) = publication
            .subscriptions
            .iter()
            .position(|s| s.subscriber == subscriber)
        else {
            return;
        };
        // A layer that was asked for but does not arrive yet is stood in for by the nearest
        // that does.
        let target = choice
            .ok()
            .and_then(|layer| publication.live_layer_near(now, layer));
        let stream_id = publication.stream_id.clone();
        let subscription = &mut publication.subscriptions[index];
        let previous = std::mem::replace(&mut subscription.choice, choice);
        if previous != choice {
            tracing::debug!(subscriber = subscriber.0, stream = %stream_id, ?previous, ?choice, "video layer");
            subscription.choice_changed(now, previous, choice);
        }
        if subscription.forwarder.target() != target {
            subscription.forwarder.set_target(target);
            subscription.waiting_since = None;
            request_keyframe_if_waiting(now, publication, index, &mut self.outputs);
        }
        let shown = |choice: Choice| match choice {
            Err(Paused::Bandwidth) => Some(VideoState::PausedForBandwidth),
            Err(Paused::LastN) => Some(VideoState::PausedForLastN),
            Ok(_) => Some(VideoState::Playing),
            Err(Paused::NotWanted) => None,
        };
        let (before, after) = (shown(previous), shown(choice));
        let announce = match (before, after) {
            (Some(before), Some(after)) => before != after,
            // Pauses are always told; a first play only after a pause.
            (None, Some(after)) => after != VideoState::Playing,
            (_, None) => false,
        };
        if announce && let Some(state) = after {
            self.outputs.push_back(Output::Video {
                to: subscriber,
                stream_id,
                state,
            });
        }
    }

    /// Asks again for keyframes that subscribers have waited on too long.
    fn retry_keyframes(&mut self, now: Instant) {
        for publication in self.publications.values_mut() {
            for index in 0..publication.subscriptions.len() {
                let subscription = &publication.subscriptions[index];
                let overdue = subscription.ready
                    && subscription.forwarder.waiting_for_keyframe()
                    && subscription
                        .waiting_since
                        .is_some_and(|at| now.saturating_duration_since(at) >= KEYFRAME_RETRY);
                if overdue {
                    publication.subscriptions[index].waiting_since = None;
                    request_keyframe_if_waiting(now, publication, index, &mut self.outputs);
                }
            }
        }
    }
}

/// Asks the publisher for a keyframe of the layer a subscription waits for, if it waits.
fn request_keyframe_if_waiting(
    now: Instant,
    publication: &mut Publication,
    index: usize,
    outputs: &mut VecDeque<Output>,
) {
    let subscription = &mut publication.subscriptions[index];
    if !subscription.ready || !subscription.forwarder.waiting_for_keyframe() {
        return;
    }
    let Some(layer) = subscription.forwarder.target() else {
        return;
    };
    subscription.waiting_since.get_or_insert(now);
    request_layer_keyframe(now, publication, layer, outputs);
}

/// Asks the publisher for a keyframe of one layer, within the rate limit.
fn request_layer_keyframe(
    now: Instant,
    publication: &mut Publication,
    layer: usize,
    outputs: &mut VecDeque<Output>,
) {
    let Some(state) = publication.layers.get_mut(layer) else {
        return;
    };
    if let Some(ssrc) = state.ssrc
        && state.keyframes.request(now)
    {
        outputs.push_back(Output::RequestKeyframe {
            publisher: publication.publisher,
            ssrc,
        });
    }
}

#[cfg(test)]
mod tests;

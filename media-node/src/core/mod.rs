//! The media node's pure core: rooms, participants, publications, down-tracks, the forwarder
//! and the choice of what each subscriber receives.
//!
//! [`Core`] is a plain struct driven by events with the time passed in. It does no I/O, holds no
//! locks and never looks at a clock. The node (see `crate::node`) feeds it what happened (someone
//! joined, an offer named tracks, a track or simulcast layer opened, a packet arrived, a subscriber
//! asked for a keyframe, a subscriber's bandwidth estimate moved, a client said how large it shows
//! a video) and carries out what it decides, read from [`Core::poll_output`]: tell people who came
//! and went, add or remove a down-track, ask a publisher for a keyframe or to start or stop a
//! simulcast layer, tell a subscriber that a video is paused, announce the dominant speaker, pass
//! on chat.
//!
//! The parts, by concern (several `impl Core` blocks, one per file):
//!
//! - `roster`: rooms and who is in them: join, leave, media state, chat, what each
//!   participant asks for itself (audio only, the size it shows each video at);
//! - `moderation`: moderators and what they may do (the lobby, muting, removing, locking,
//!   ending the meeting), raised hands, and the role passed on when the last moderator leaves;
//! - `subscriptions`: publications and down-tracks: a track that an offer names (or, unnamed,
//!   one that begins to arrive) is published and everyone else subscribed, so that they
//!   negotiate it once, while the publisher's connection comes up; down-tracks start from a
//!   keyframe; keyframe requests reach the publisher, rate-limited ([`keyframe`]) and retried;
//! - `bandwidth`: every tick, each subscriber's downlink estimate shared out among the videos of
//!   its room with the [`allocation`] algorithm, the layers publishers are asked to encode, and
//!   what the congestion control should probe for;
//! - `fanout`: the hot path, one packet to the subscribers that get it;
//! - [`forwarder`]: one down-track's packet decisions and header rewriting, continuous across
//!   simulcast layer switches;
//! - [`speaker`]: the dominant speaker of a room, from audio levels;
//! - [`vp8`]: what the forwarder reads of (and rewrites in) a VP8 payload;
//! - `publication`: the layers and subscriptions of one published track;
//! - `moving`: participants who move (their connection lost, their node lost or draining) keep
//!   their place and everyone's down-tracks of them, so that nobody else renegotiates;
//! - `messages`: what the core is told and what it decides ([`Output`]).
//!
//! Every [`TICK`] the core measures each layer's bitrate, re-evaluates the dominant speaker and
//! re-allocates every subscriber's downlink. The hot path is [`Core::forward`]: one packet in,
//! the list of subscribers with the rewritten header for each, written into a buffer the caller
//! reuses, so no allocation per packet.

pub mod allocation;
mod bandwidth;
pub mod codec;
mod fanout;
pub mod forwarder;
pub mod keyframe;
mod messages;
mod moderation;
mod moving;
mod publication;
mod relay;
mod roster;
pub mod speaker;
mod subscriptions;
pub mod vp8;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

pub use codec::{Codec, MediaKind};
pub use fanout::Forwarded;
pub use forwarder::{Forwarder, PacketMeta, Rewrite};
pub use messages::{
    Action, ChatError, ChatMessage, DownTrack, Ending, JoinError, JoinRequest, Joined, LeaveReason,
    ModerationError, ModeratorRequest, OfferedTrack, Output, ParticipantInfo, PublishedLayer,
    RosterEvent, Source, VideoState,
};
pub use moderation::MAX_WAITING;
pub use moving::MOVE_GRACE;
use publication::Publication;
pub use relay::{LinkId, MAX_PARTICIPANTS_TOGETHER, RelayMessage};
use speaker::SpeakerDetector;
pub use subscriptions::LARGE_ROOM;
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
/// The most simulcast layers a track may have.
const MAX_LAYERS: usize = 4;

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
    /// What a moderator switched off and the participant has not switched on again: its
    /// packets are not forwarded meanwhile.
    held: moderation::Held,
    /// For a participant of another node: the link it came over and its id there.
    origin: Option<(LinkId, u64)>,
}

impl Participant {
    fn new(room: String, info: ParticipantInfo, origin: Option<(LinkId, u64)>) -> Self {
        Self {
            room,
            info,
            publications: Vec::new(),
            estimate: None,
            wanted_estimate: None,
            catch_up_estimate: None,
            audio_only: false,
            viewports: HashMap::new(),
            chat_times: VecDeque::new(),
            held: moderation::Held::default(),
            origin,
        }
    }
}

#[derive(Debug, Default)]
struct Room {
    /// In the order they came in.
    members: Vec<PeerId>,
    speakers: SpeakerDetector,
    last_n: u32,
    /// Who waits in the lobby, first come first.
    waiting: Vec<(PeerId, JoinRequest)>,
    /// Raised hands, in the order they went up.
    hands: Vec<PeerId>,
    /// Nobody new comes in but moderators.
    locked: bool,
    /// The links to the other nodes that host participants of the room.
    links: Vec<LinkId>,
    /// Who waits in the lobbies of the linked nodes (participant id, display name), per link.
    remote_waiting: Vec<(LinkId, Vec<(String, String)>)>,
}

impl Room {
    /// Whether nothing keeps the room: nobody in it or waiting, and no link to another node.
    fn is_unused(&self) -> bool {
        self.members.is_empty() && self.waiting.is_empty() && self.links.is_empty()
    }
}

/// The rooms of one media node.
#[derive(Debug)]
pub struct Core {
    rooms: HashMap<String, Room>,
    participants: FxHashMap<PeerId, Participant>,
    publications: FxHashMap<PublicationId, Publication>,
    /// (publisher, publisher SSRC) -> publication and layer.
    published: FxHashMap<(PeerId, u32), (PublicationId, usize)>,
    /// (subscriber, down-track SSRC) -> publication.
    subscribed: FxHashMap<(PeerId, u32), PublicationId>,
    next_publication: u64,
    /// State of a xorshift generator for down-track SSRCs: the core stays deterministic for a
    /// given seed, which the tests rely on.
    ssrc_state: u64,
    /// When the next [`TICK`] is due, once there is anything to tick for.
    next_tick: Option<Instant>,
    last_tick: Option<Instant>,
    outputs: VecDeque<Output>,
    /// How those in a lobby will come in: microphone off, camera off, screen shared.
    waiting_media: HashMap<PeerId, [bool; 3]>,
    /// The room of each link to another node.
    links: FxHashMap<LinkId, String>,
    /// The participants of other nodes: (link, their id on their node) -> their id here.
    remote: FxHashMap<(LinkId, u64), PeerId>,
    next_remote: u64,
    /// Participants whose connection was lost (here, or at their own node), and when they
    /// leave unless they are back.
    adrift: Vec<(PeerId, Instant)>,
    /// Down-tracks of participants who came in again, waiting for their new publications.
    orphans: Vec<moving::Orphan>,
}

impl Core {
    /// An empty node. `seed` makes the down-track SSRCs unpredictable between runs.
    pub fn new(seed: u64) -> Self {
        Self {
            rooms: HashMap::new(),
            participants: FxHashMap::default(),
            publications: FxHashMap::default(),
            published: FxHashMap::default(),
            subscribed: FxHashMap::default(),
            next_publication: 0,
            ssrc_state: seed | 1,
            next_tick: None,
            last_tick: None,
            outputs: VecDeque::new(),
            waiting_media: HashMap::new(),
            links: FxHashMap::default(),
            remote: FxHashMap::default(),
            next_remote: 0,
            adrift: Vec::new(),
            orphans: Vec::new(),
        }
    }

    /// The next thing to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        while let Some(output) = self.outputs.pop_front() {
            if let Some(output) = self.route(output) {
                return Some(output);
            }
        }
        None
    }

    /// Rooms with at least one participant on this node.
    pub fn room_count(&self) -> usize {
        self.rooms().count()
    }

    /// Participants on this node (not those of other nodes of spanning rooms).
    pub fn participant_count(&self) -> usize {
        self.participants.len() - self.remote.len()
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

    /// Every room with its number of participants on this node, if it has any.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, usize)> {
        self.rooms.iter().filter_map(|(room, state)| {
            let local = state.members.iter().filter(|m| !m.is_remote()).count();
            (local > 0).then_some((room.as_str(), local))
        })
    }

    /// The participants of `room`.
    pub fn room_members(&self, room: &str) -> &[PeerId] {
        self.rooms
            .get(room)
            .map_or(&[], |room| room.members.as_slice())
    }

    /// The participant of `room` with the id `participant_id`, if there is one.
    pub fn participant_in(&self, room: &str, participant_id: &str) -> Option<PeerId> {
        self.room_members(room).iter().copied().find(|peer| {
            self.participants
                .get(peer)
                .is_some_and(|p| p.info.participant_id == participant_id)
        })
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
            let busy = !self.publications.is_empty() || self.moves_pending();
            self.next_tick = busy.then(|| now + TICK);
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
        self.expire_moves(now);
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
}

#[cfg(test)]
mod relay_tests;
#[cfg(test)]
mod tests;

//! The media node's pure core: rooms, participants, publications, down-tracks and the
//! forwarder.
//!
//! [`Core`] is a plain struct driven by events with the time passed in. It does no I/O, holds no
//! locks and never looks at a clock. The transport feeds it what happened (someone joined, a
//! track opened, a packet arrived, a subscriber asked for a keyframe) and carries out what it
//! decides, read from [`Core::poll_output`]: tell people who came and went, add or remove a
//! down-track on a subscriber's connection, ask a publisher for a keyframe.
//!
//! The hot path is [`Core::forward`]: one packet in, the list of subscribers with the rewritten
//! header for each, written into a buffer the caller reuses, so no allocation per packet.

pub mod codec;
pub mod forwarder;
pub mod keyframe;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use codec::{Codec, MediaKind};
pub use forwarder::{Forwarder, PacketMeta, Rewrite};
use keyframe::KeyframeRequests;

/// A participant's connection on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// One track a participant publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicationId(u64);

/// How long a new video subscriber may wait for its first keyframe before it is asked for
/// again (the first request or the keyframe itself may have been lost).
const KEYFRAME_RETRY: Duration = Duration::from_secs(1);

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
    },
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
    /// The publisher's SSRC.
    pub publisher_ssrc: u32,
    /// Audio or video.
    pub kind: MediaKind,
    /// The codec the publisher sends.
    pub codec: Codec,
    /// The media stream id the subscriber sees: the publisher's participant id.
    pub stream_id: String,
    /// The track id the subscriber sees, unique on its connection.
    pub track_id: String,
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
    /// Ask a publisher for a keyframe on one of its tracks.
    RequestKeyframe {
        /// Whose connection.
        publisher: PeerId,
        /// The publisher's SSRC.
        ssrc: u32,
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

#[derive(Debug)]
struct Participant {
    room: String,
    info: ParticipantInfo,
    publications: Vec<PublicationId>,
}

#[derive(Debug)]
struct Subscription {
    subscriber: PeerId,
    forwarder: Forwarder,
    /// Negotiated and connected: packets may flow.
    ready: bool,
    /// When forwarding became possible (for keyframe retries).
    ready_at: Option<Instant>,
}

#[derive(Debug)]
struct Publication {
    publisher: PeerId,
    ssrc: u32,
    codec: Codec,
    track_id: String,
    subscriptions: Vec<Subscription>,
    keyframes: KeyframeRequests,
}

impl Publication {
    fn down_track(&self, subscriber: PeerId, ssrc: u32, stream_id: &str) -> DownTrack {
        DownTrack {
            subscriber,
            ssrc,
            publisher: self.publisher,
            publisher_ssrc: self.ssrc,
            kind: self.codec.kind(),
            codec: self.codec,
            stream_id: stream_id.to_owned(),
            track_id: self.track_id.clone(),
        }
    }
}

/// The rooms of one media node.
#[derive(Debug)]
pub struct Core {
    rooms: HashMap<String, Vec<PeerId>>,
    participants: HashMap<PeerId, Participant>,
    publications: HashMap<PublicationId, Publication>,
    /// (publisher, publisher SSRC) -> publication.
    published: HashMap<(PeerId, u32), PublicationId>,
    /// (subscriber, down-track SSRC) -> publication.
    subscribed: HashMap<(PeerId, u32), PublicationId>,
    next_publication: u64,
    /// State of a xorshift generator for down-track SSRCs: the core stays deterministic for a
    /// given seed, which the tests rely on.
    ssrc_state: u64,
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
            .map(|(room, members)| (room.as_str(), members.len()))
    }

    /// The participants of `room`.
    pub fn room_members(&self, room: &str) -> &[PeerId] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
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
        let members = self.rooms.get(&request.room).map_or(0, Vec::len);
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
        self.rooms
            .entry(request.room.clone())
            .or_default()
            .push(peer);
        self.participants.insert(
            peer,
            Participant {
                room: request.room,
                info,
                publications: Vec::new(),
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
        let Some(stream_id) = self
            .participants
            .get(&publication.publisher)
            .map(|p| p.info.participant_id.clone())
        else {
            return;
        };
        let needs_keyframe = publication.codec.kind() == MediaKind::Video;
        publication.subscriptions.push(Subscription {
            subscriber,
            forwarder: Forwarder::new(ssrc, needs_keyframe),
            ready: false,
            ready_at: None,
        });
        self.outputs.push_back(Output::AddDownTrack(
            publication.down_track(subscriber, ssrc, &stream_id),
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
        if let Some(members) = self.rooms.get_mut(&participant.room) {
            members.retain(|member| *member != peer);
            for other in members.iter() {
                self.outputs.push_back(Output::Roster {
                    to: *other,
                    event: RosterEvent::Left {
                        participant_id: participant.info.participant_id.clone(),
                        reason,
                    },
                });
            }
            if members.is_empty() {
                self.rooms.remove(&participant.room);
            }
        }
    }

    /// Records a participant's microphone and camera state and tells the others.
    pub fn set_media_state(&mut self, peer: PeerId, audio_muted: bool, video_muted: bool) {
        let Some(participant) = self.participants.get_mut(&peer) else {
            return;
        };
        participant.info.audio_muted = audio_muted;
        participant.info.video_muted = video_muted;
        let event = RosterEvent::Media {
            participant_id: participant.info.participant_id.clone(),
            audio_muted,
            video_muted,
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

    /// A publisher's track opened. Everyone else in the room is subscribed to it. Idempotent:
    /// the same SSRC opening again (after a renegotiation) changes nothing.
    pub fn publish(&mut self, peer: PeerId, ssrc: u32, codec: Codec) -> Option<PublicationId> {
        if let Some(id) = self.published.get(&(peer, ssrc)) {
            return Some(*id);
        }
        let participant = self.participants.get_mut(&peer)?;
        let id = PublicationId(self.next_publication);
        self.next_publication += 1;
        participant.publications.push(id);
        let track_id = format!(
            "{}-{}",
            participant.info.participant_id,
            match codec.kind() {
                MediaKind::Audio => "audio",
                MediaKind::Video => "video",
            }
        );
        // A second track of the same kind gets a distinct id.
        let track_id = if self
            .publications
            .values()
            .any(|p| p.publisher == peer && p.track_id == track_id)
        {
            format!("{track_id}-{}", id.0)
        } else {
            track_id
        };
        let room = participant.room.clone();
        self.publications.insert(
            id,
            Publication {
                publisher: peer,
                ssrc,
                codec,
                track_id,
                subscriptions: Vec::new(),
                keyframes: KeyframeRequests::default(),
            },
        );
        self.published.insert((peer, ssrc), id);
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
        self.published
            .remove(&(publication.publisher, publication.ssrc));
        for subscription in publication.subscriptions {
            let ssrc = subscription.forwarder.ssrc();
            self.subscribed.remove(&(subscription.subscriber, ssrc));
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
        let Some(subscription) = publication
            .subscriptions
            .iter_mut()
            .find(|s| s.subscriber == subscriber)
        else {
            return;
        };
        if subscription.ready {
            return;
        }
        subscription.ready = true;
        subscription.ready_at = Some(now);
        if subscription.forwarder.waiting_for_keyframe() && publication.keyframes.request(now) {
            self.outputs.push_back(Output::RequestKeyframe {
                publisher: publication.publisher,
                ssrc: publication.ssrc,
            });
        }
    }

    /// A subscriber asked for a keyframe on one of its down-tracks (PLI or FIR).
    pub fn keyframe_requested(&mut self, now: Instant, subscriber: PeerId, ssrc: u32) {
        let Some(id) = self.subscribed.get(&(subscriber, ssrc)).copied() else {
            return;
        };
        if let Some(publication) = self.publications.get_mut(&id)
            && publication.keyframes.request(now)
        {
            self.outputs.push_back(Output::RequestKeyframe {
                publisher: publication.publisher,
                ssrc: publication.ssrc,
            });
        }
    }

    /// Forwards one packet of `publisher`'s track `ssrc`: for each subscriber that gets it,
    /// pushes the subscriber and the rewritten header to `out` (cleared first). `payload` is
    /// the RTP payload, read for keyframes. Returns `false` when the SSRC is not published.
    pub fn forward(
        &mut self,
        publisher: PeerId,
        ssrc: u32,
        sequence_number: u16,
        timestamp: u32,
        payload: &[u8],
        out: &mut Vec<(PeerId, Rewrite)>,
    ) -> bool {
        out.clear();
        let Some(id) = self.published.get(&(publisher, ssrc)) else {
            return false;
        };
        let Some(publication) = self.publications.get_mut(id) else {
            return false;
        };
        let meta = PacketMeta {
            sequence_number,
            timestamp,
            keyframe: publication.codec.starts_keyframe(payload),
            padding_only: payload.is_empty(),
        };
        for subscription in &mut publication.subscriptions {
            if !subscription.ready {
                continue;
            }
            if let Some(rewrite) = subscription.forwarder.forward(&meta) {
                out.push((subscription.subscriber, rewrite));
            }
        }
        true
    }

    /// When [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.publications
            .values()
            .flat_map(|publication| {
                let retry = publication
                    .subscriptions
                    .iter()
                    .filter(|s| s.ready && s.forwarder.waiting_for_keyframe())
                    .filter_map(|s| s.ready_at)
                    .map(|at| at + KEYFRAME_RETRY)
                    .min();
                [publication.keyframes.deadline(), retry]
            })
            .flatten()
            .min()
    }

    /// Sends held keyframe requests that are due, and asks again for subscribers that have
    /// waited too long for their first keyframe.
    pub fn handle_timeout(&mut self, now: Instant) {
        for publication in self.publications.values_mut() {
            let mut due = publication.keyframes.poll(now);
            for subscription in &mut publication.subscriptions {
                if subscription.ready
                    && subscription.forwarder.waiting_for_keyframe()
                    && subscription
                        .ready_at
                        .is_some_and(|at| now.duration_since(at) >= KEYFRAME_RETRY)
                {
                    subscription.ready_at = Some(now);
                    due |= publication.keyframes.request(now);
                }
            }
            if due {
                self.outputs.push_back(Output::RequestKeyframe {
                    publisher: publication.publisher,
                    ssrc: publication.ssrc,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;

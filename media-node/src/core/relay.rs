//! Rooms that span nodes: the links to the other nodes that host participants of a room, what
//! this node tells them about its own participants, and the participants it learns of from them.
//!
//! Each node of a spanning room keeps the whole room: its own participants, and every
//! participant of the other nodes as a *remote* participant (a [`PeerId`] with
//! [`PeerId::is_remote`]) that it learns of over the link to that node. A remote participant is
//! a member like any other: the local ones see it come and go, hear and see what it publishes,
//! take it into the dominant speaker and the last N, and a moderator here may act on it. It has
//! no connection here and receives nothing from this node: its own node sends it everything.
//!
//! Every node tells each link about its *own* participants only (the links of a room form a
//! full mesh, so nothing is passed on twice) as [`RelayMessage`]s, carried by the control
//! plane: who is there and their state, what they publish, their chat messages, who waits in
//! the lobby (a moderator on any node may let them in; their own node does it). Each local
//! publication is relayed once per link, in the layers the other node wants (see
//! [`Core::relay_links`]); what the other node's subscribers need comes back as keyframe
//! requests and the layers they want.
//! Outputs of the room logic addressed to a remote participant are turned into relay messages
//! for its node where they concern the participant itself (a moderator's request, its removal,
//! its new role), and dropped otherwise.

use std::time::Instant;

use super::{
    ChatMessage, Codec, Core, Ending, LeaveReason, ModeratorRequest, OfferedTrack, Output,
    Participant, ParticipantInfo, PeerId, PublicationId, PublishedLayer, RosterEvent, Source,
};

/// The most participants one [`RelayMessage::Participants`] names: a large room's roster goes in
/// messages of a size the control plane carries as readily as any other.
pub const MAX_PARTICIPANTS_TOGETHER: usize = 200;

/// A link to another node that hosts participants of the same room; the control plane names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// The bit that marks the [`PeerId`]s of remote participants: the node numbers its own
/// connections from 0.
const REMOTE: u64 = 1 << 63;

impl PeerId {
    /// Whether this is a participant of another node.
    pub fn is_remote(self) -> bool {
        self.0 & REMOTE != 0
    }
}

/// What a node tells another node of a spanning room. `peer` is always the participant's
/// [`PeerId`] on the node it is connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayMessage {
    /// The sending end's random bytes for this opening of the link's keys (the node's
    /// transport's, see `crate::node::relay`; the core never sees it).
    Hello {
        /// 16 random bytes.
        nonce: [u8; 16],
    },
    /// A participant of the sending node is in the room, as it is now (sent when it comes in
    /// and whenever its state changes).
    Participant {
        /// Who.
        peer: u64,
        /// Its state.
        info: ParticipantInfo,
    },
    /// The sending node's participants in the room, as they are now, at most
    /// [`MAX_PARTICIPANTS_TOGETHER`] (sent, in as many messages as it takes, when the link
    /// opens): the receiving node tells its own participants of them together.
    Participants(Vec<(u64, ParticipantInfo)>),
    /// A participant of the sending node left.
    Left {
        /// Who.
        peer: u64,
        /// Why.
        reason: LeaveReason,
    },
    /// A track of a participant of the sending node, with the SSRCs of the layers that have
    /// arrived so far (sent when it is announced and when a layer arrives).
    Publication {
        /// Whose.
        peer: u64,
        /// The track's id, unique on the sending node.
        track: u64,
        /// Its codec.
        codec: Codec,
        /// What it carries.
        source: Source,
        /// One entry per layer, lowest first.
        ssrcs: Vec<Option<u32>>,
    },
    /// A track was withdrawn.
    Unpublished {
        /// Whose.
        peer: u64,
        /// Which.
        track: u64,
    },
    /// A participant of the sending node wrote to the room.
    Chat(ChatMessage),
    /// Subscribers on the sending node wait for a keyframe of a layer of the receiver's.
    Keyframe {
        /// The publisher.
        peer: u64,
        /// The layer's SSRC.
        ssrc: u32,
    },
    /// Which layers of a track the sending node's subscribers want (all, until told).
    Layers {
        /// The publisher.
        peer: u64,
        /// The track's source.
        source: Source,
        /// One flag per layer, lowest first.
        wanted: Vec<bool>,
    },
    /// A moderator on the sending node switched something of the receiver's participant off,
    /// or asks it to switch its microphone on.
    Request {
        /// Whom.
        peer: u64,
        /// What.
        request: ModeratorRequest,
    },
    /// A moderator on the sending node made the receiver's participant a moderator.
    MadeModerator {
        /// Whom.
        peer: u64,
    },
    /// A moderator on the sending node locked the room (or unlocked it).
    Locked(bool),
    /// A participant of the sending node raised or lowered its hand.
    Hand {
        /// Whose.
        peer: u64,
        /// Up or down.
        raised: bool,
    },
    /// A moderator on the sending node lowered the hand of the receiver's participant.
    LowerHand {
        /// Whose.
        peer: u64,
    },
    /// A moderator on the sending node ended the receiver's participant's session.
    Close {
        /// Whose.
        peer: u64,
        /// Why.
        reason: Ending,
    },
    /// Who waits in the sending node's lobby of the room, whole (sent when it changes and when
    /// the link opens): moderators on every node see every knock.
    Lobby {
        /// Participant id and display name, first come first.
        waiting: Vec<(String, String)>,
    },
    /// A moderator on the sending node let someone who waits in the receiver's lobby in, or
    /// not.
    Admit {
        /// Who waits.
        participant_id: String,
        /// In, or not.
        admit: bool,
    },
}

impl Core {
    /// Opens a link to another node hosting participants of `room`: it is told about every
    /// participant here and what they publish, and receives every local publication.
    pub fn open_link(&mut self, link: LinkId, room: &str) {
        if self.links.contains_key(&link) {
            return;
        }
        self.links.insert(link, room.to_owned());
        let state = self.rooms.entry(room.to_owned()).or_default();
        state.links.push(link);
        let members = state.members.clone();
        let waiting = self.lobby(room);
        if !waiting.is_empty() {
            self.relay(link, RelayMessage::Lobby { waiting });
        }
        let local: Vec<PeerId> = members.into_iter().filter(|p| !p.is_remote()).collect();
        for some in local.chunks(MAX_PARTICIPANTS_TOGETHER) {
            let together = some
                .iter()
                .filter_map(|peer| Some((peer.0, self.participants.get(peer)?.info.clone())))
                .collect();
            self.relay(link, RelayMessage::Participants(together));
        }
        for peer in local {
            let publications = self
                .participants
                .get(&peer)
                .map(|p| p.publications.clone())
                .unwrap_or_default();
            for id in publications {
                if let Some(publication) = self.publications.get_mut(&id) {
                    publication.relays.push(link);
                }
                self.relay_publication_to(link, id);
            }
        }
    }

    /// Closes a link: nothing more is relayed to it, and the participants that came over it
    /// are adrift (see `moving`): their node may be lost and they on their way to another,
    /// or the link may open again; they leave if neither happens within
    /// [`MOVE_GRACE`](super::MOVE_GRACE).
    pub fn close_link(&mut self, now: Instant, link: LinkId) {
        let Some(room) = self.links.remove(&link) else {
            return;
        };
        if let Some(state) = self.rooms.get_mut(&room) {
            state.links.retain(|other| *other != link);
            let before = state.remote_waiting.len();
            state.remote_waiting.retain(|(other, _)| *other != link);
            if state.remote_waiting.len() != before {
                self.tell_moderators_who_waits(&room);
            }
        }
        for publication in self.publications.values_mut() {
            publication.relays.retain(|other| *other != link);
            publication.relay_wants.retain(|(other, _)| *other != link);
        }
        let remote: Vec<PeerId> = self
            .remote
            .iter()
            .filter(|((from, _), _)| *from == link)
            .map(|(_, peer)| *peer)
            .collect();
        self.set_adrift(now, remote);
        if self.rooms.get(&room).is_some_and(|state| state.is_unused()) {
            self.rooms.remove(&room);
        }
    }

    /// The links of a room, for its status.
    pub fn links_of(&self, room: &str) -> &[LinkId] {
        self.rooms
            .get(room)
            .map_or(&[], |state| state.links.as_slice())
    }

    /// The links that a packet of `publisher`'s SSRC `ssrc` goes to: those of its room that
    /// want its layer (see [`Core::forward`]: asked only for packets it says are relayed).
    pub fn relay_links(&self, publisher: PeerId, ssrc: u32) -> impl Iterator<Item = LinkId> + '_ {
        let found = self
            .published
            .get(&(publisher, ssrc))
            .and_then(|(id, layer)| Some((self.publications.get(id)?, *layer)));
        found.into_iter().flat_map(|(publication, layer)| {
            publication
                .relays
                .iter()
                .copied()
                .filter(move |link| publication.relays_layer(*link, layer))
        })
    }

    /// The remote participant that `link`'s node knows as `peer`, if it is in the room here.
    pub fn remote_peer(&self, link: LinkId, peer: u64) -> Option<PeerId> {
        self.remote.get(&(link, peer)).copied()
    }

    /// A message from the node at the other end of `link`. Whatever it names must be in the
    /// link's room: a link cannot reach into another room.
    pub fn relayed(&mut self, now: Instant, link: LinkId, message: RelayMessage) {
        let Some(room) = self.links.get(&link).cloned() else {
            return;
        };
        match message {
            RelayMessage::Hello { .. } => {}
            RelayMessage::Participant { peer, info } => {
                self.remote_participants(link, &room, vec![(peer, info)]);
            }
            RelayMessage::Participants(some) => self.remote_participants(link, &room, some),
            RelayMessage::Left { peer, reason } => match (self.remote_peer(link, peer), reason) {
                // Its page may be on its way back, there or to another node (its own drains):
                // it is adrift, as if its link had closed. (Unless it is back already.)
                (Some(remote), LeaveReason::ConnectionLost) if !self.has_another_copy(remote) => {
                    self.set_adrift(now, vec![remote]);
                }
                (Some(remote), _) => self.leave(remote, reason),
                (None, _) => {}
            },
            RelayMessage::Publication {
                peer,
                track,
                codec,
                source,
                ssrcs,
            } => {
                if let Some(remote) = self.remote_peer(link, peer) {
                    self.remote_publication(now, remote, track, codec, source, &ssrcs);
                }
            }
            RelayMessage::Unpublished { peer, track } => {
                if let Some(remote) = self.remote_peer(link, peer)
                    && let Some(id) = self.publication_of_track(remote, track)
                {
                    self.unpublish_id(id);
                    if let Some(participant) = self.participants.get_mut(&remote) {
                        participant.publications.retain(|other| *other != id);
                    }
                }
            }
            RelayMessage::Chat(message) => {
                // Only from one of the link's own participants.
                if self.participant_in(&room, &message.from).is_some_and(|p| {
                    self.participants
                        .get(&p)
                        .is_some_and(|p| p.origin.is_some_and(|(from, _)| from == link))
                }) {
                    self.deliver_chat(&room, None, &message);
                }
            }
            RelayMessage::Keyframe { peer, ssrc } => {
                if let Some(peer) = self.local_in(&room, peer) {
                    self.keyframe_for_link(now, peer, ssrc);
                }
            }
            RelayMessage::Layers {
                peer,
                source,
                wanted,
            } => {
                if let Some(peer) = self.local_in(&room, peer) {
                    self.layers_for_link(link, peer, source, wanted);
                }
            }
            RelayMessage::Request { peer, request } => {
                if let Some(peer) = self.local_in(&room, peer) {
                    self.requested_by_link(peer, request);
                }
            }
            RelayMessage::MadeModerator { peer } => {
                if let Some(peer) = self.local_in(&room, peer) {
                    self.make_moderator(peer);
                }
            }
            RelayMessage::Locked(locked) => {
                if let Some(state) = self.rooms.get_mut(&room)
                    && state.locked != locked
                {
                    state.locked = locked;
                    self.tell_local(&room, RosterEvent::Locked(locked));
                }
            }
            RelayMessage::Hand { peer, raised } => {
                if let Some(remote) = self.remote_peer(link, peer) {
                    self.raise_hand(remote, raised);
                }
            }
            RelayMessage::LowerHand { peer } => {
                if let Some(peer) = self.local_in(&room, peer) {
                    self.raise_hand(peer, false);
                }
            }
            RelayMessage::Close { peer, reason } => {
                if let Some(peer) = self.local_in(&room, peer) {
                    self.end(peer, reason);
                }
            }
            RelayMessage::Lobby { waiting } => {
                if let Some(state) = self.rooms.get_mut(&room) {
                    state.remote_waiting.retain(|(other, _)| *other != link);
                    if !waiting.is_empty() {
                        state.remote_waiting.push((link, waiting));
                    }
                    self.tell_moderators_who_waits(&room);
                }
            }
            RelayMessage::Admit {
                participant_id,
                admit,
            } => self.admitted_by_link(&room, &participant_id, admit),
        }
    }

    /// A moderator on a linked node let someone who waits here in, or not.
    fn admitted_by_link(&mut self, room: &str, participant_id: &str, admit: bool) {
        // Gone meanwhile (left, or let in by a moderator here): nothing to do.
        if let Some((peer, _)) = self.rooms.get(room).and_then(|state| {
            state
                .waiting
                .iter()
                .find(|(_, request)| request.participant_id == participant_id)
        }) {
            let _ = self.let_in(*peer, admit);
        }
    }

    /// The local participant `peer` of `room`, if it is one.
    fn local_in(&self, room: &str, peer: u64) -> Option<PeerId> {
        let peer = PeerId(peer);
        let participant = self.participants.get(&peer)?;
        (!peer.is_remote() && participant.room == room).then_some(peer)
    }

    /// Remote participants come in, or their state changed: the local members are told of
    /// those who came in with one message.
    fn remote_participants(&mut self, link: LinkId, room: &str, some: Vec<(u64, ParticipantInfo)>) {
        let joined: Vec<ParticipantInfo> = some
            .into_iter()
            .filter_map(|(peer, info)| self.remote_participant(link, peer, info))
            .collect();
        match <[ParticipantInfo; 1]>::try_from(joined) {
            Ok([one]) => self.tell_local(room, RosterEvent::Joined(one)),
            Err(joined) if joined.is_empty() => {}
            Err(joined) => self.tell_local(room, RosterEvent::JoinedTogether(joined)),
        }
    }

    /// A remote participant comes in, or its state changed: the local members are told as
    /// they are about their own, except that one who came in is returned, for the caller to
    /// tell.
    fn remote_participant(
        &mut self,
        link: LinkId,
        peer: u64,
        info: ParticipantInfo,
    ) -> Option<ParticipantInfo> {
        let room = self.links.get(&link).cloned()?;
        if let Some(remote) = self.remote_peer(link, peer) {
            // Adrift since its link closed, and back over it.
            if self.is_adrift(remote) {
                self.no_longer_adrift(remote);
                self.tell_connection(remote, false);
            }
            let participant = self.participants.get_mut(&remote)?;
            let before = std::mem::replace(&mut participant.info, info.clone());
            // What its own node switched back on is forwarded here again too.
            participant
                .held
                .release(info.audio_muted, info.video_muted, info.screen_sharing);
            let media = (info.audio_muted, info.video_muted, info.screen_sharing);
            if (
                before.audio_muted,
                before.video_muted,
                before.screen_sharing,
            ) != media
            {
                self.tell_local(
                    &room,
                    RosterEvent::Media {
                        participant_id: info.participant_id.clone(),
                        audio_muted: info.audio_muted,
                        video_muted: info.video_muted,
                        screen_sharing: info.screen_sharing,
                    },
                );
            }
            if info.moderator && !before.moderator {
                let participant_id = info.participant_id;
                self.tell_local(&room, RosterEvent::Moderator { participant_id });
                self.tell_waiting(&room);
            }
            self.wake(remote);
            return None;
        }
        // The same person twice in one room: it moved from a node that was lost (or from
        // here, its connection lost), or a stale entry of a link that was replaced. The newer
        // stands, in the older's place. (One still connected here stays until its connection
        // closes: its page moves when this node drains.)
        if let Some(stale) = self.participant_in(&room, &info.participant_id)
            && (stale.is_remote() || self.is_adrift(stale))
        {
            self.replace_stale(stale);
        }
        let remote = PeerId(REMOTE | self.next_remote);
        self.next_remote += 1;
        self.remote.insert((link, peer), remote);
        let moderator = info.moderator;
        let state = self.rooms.entry(room.clone()).or_default();
        state.members.push(remote);
        self.participants.insert(
            remote,
            Participant::new(room.clone(), info.clone(), Some((link, peer))),
        );
        if moderator {
            self.tell_waiting(&room);
        }
        Some(info)
    }

    /// A remote participant's track, announced or with layers that arrived at its node.
    fn remote_publication(
        &mut self,
        now: Instant,
        remote: PeerId,
        track: u64,
        codec: Codec,
        source: Source,
        ssrcs: &[Option<u32>],
    ) {
        let layer_count = ssrcs.len().clamp(1, super::MAX_LAYERS);
        let offered = OfferedTrack {
            track,
            layer_count,
            codec,
            source,
        };
        self.announce(now, remote, offered);
        for (layer, ssrc) in ssrcs.iter().take(layer_count).enumerate() {
            if let Some(ssrc) = ssrc {
                let layer = PublishedLayer {
                    track,
                    ssrc: *ssrc,
                    layer,
                    layer_count,
                    codec,
                    source,
                };
                self.publish(now, remote, layer);
            }
        }
    }

    /// Subscribers on a linked node wait for a keyframe of a layer of `peer`'s.
    fn keyframe_for_link(&mut self, now: Instant, peer: PeerId, ssrc: u32) {
        let Some((id, layer)) = self.published.get(&(peer, ssrc)).copied() else {
            return;
        };
        if let Some(publication) = self.publications.get_mut(&id) {
            super::subscriptions::request_layer_keyframe(
                now,
                publication,
                layer,
                &mut self.outputs,
            );
        }
    }

    /// Records which layers of `peer`'s track a linked node wants; the next allocation asks
    /// the publisher for them.
    fn layers_for_link(&mut self, link: LinkId, peer: PeerId, source: Source, wanted: Vec<bool>) {
        let Some(participant) = self.participants.get(&peer) else {
            return;
        };
        for id in &participant.publications {
            let Some(publication) = self.publications.get_mut(id) else {
                continue;
            };
            if publication.source != source {
                continue;
            }
            let mut wanted = wanted.clone();
            wanted.resize(publication.layers.len(), false);
            publication.relay_wants.retain(|(other, _)| *other != link);
            publication.relay_wants.push((link, wanted));
        }
    }

    /// A moderator on a linked node switched something of `peer`'s off, or asks it to switch
    /// the microphone on: as if a moderator here had.
    fn requested_by_link(&mut self, peer: PeerId, request: ModeratorRequest) {
        match request {
            ModeratorRequest::Muted => self.hold(peer, Source::Microphone),
            ModeratorRequest::CameraStopped => self.hold(peer, Source::Camera),
            ModeratorRequest::ScreenStopped => self.hold(peer, Source::Screen),
            ModeratorRequest::Unmute => self
                .outputs
                .push_back(Output::Request { to: peer, request }),
        }
    }

    /// Tells the local members of `room` (not the remote ones: their own nodes tell them).
    pub(super) fn tell_local(&mut self, room: &str, event: RosterEvent) {
        for to in self.room_members(room).to_vec() {
            if !to.is_remote() {
                self.outputs.push_back(Output::Roster {
                    to,
                    event: event.clone(),
                });
            }
        }
    }

    /// Tells every link of its room about a local participant as it is now.
    pub(super) fn relay_participant(&mut self, peer: PeerId) {
        if peer.is_remote() {
            return;
        }
        for link in self.links_of_peer(peer) {
            self.relay_participant_to(link, peer);
        }
    }

    fn relay_participant_to(&mut self, link: LinkId, peer: PeerId) {
        if let Some(participant) = self.participants.get(&peer) {
            let info = participant.info.clone();
            self.relay(link, RelayMessage::Participant { peer: peer.0, info });
        }
    }

    /// Tells every link of its room that a local participant left.
    pub(super) fn relay_left(&mut self, room: &str, peer: PeerId, reason: LeaveReason) {
        if peer.is_remote() {
            return;
        }
        for link in self.links_of(room).to_vec() {
            self.relay(
                link,
                RelayMessage::Left {
                    peer: peer.0,
                    reason,
                },
            );
        }
    }

    /// Tells every link of its room about a local publication as it is now.
    pub(super) fn relay_publication(&mut self, id: PublicationId) {
        let Some(publication) = self.publications.get(&id) else {
            return;
        };
        for link in publication.relays.clone() {
            self.relay_publication_to(link, id);
        }
    }

    fn relay_publication_to(&mut self, link: LinkId, id: PublicationId) {
        let Some(publication) = self.publications.get(&id) else {
            return;
        };
        let message = RelayMessage::Publication {
            peer: publication.publisher.0,
            track: id.0,
            codec: publication.codec,
            source: publication.source,
            ssrcs: publication.layers.iter().map(|layer| layer.ssrc).collect(),
        };
        self.relay(link, message);
    }

    /// The links a new local publication of `peer`'s is relayed to.
    pub(super) fn links_of_peer(&self, peer: PeerId) -> Vec<super::LinkId> {
        if peer.is_remote() {
            return Vec::new();
        }
        self.participants
            .get(&peer)
            .map(|p| self.links_of(&p.room).to_vec())
            .unwrap_or_default()
    }

    /// Tells every link of `room` who waits in its lobby here.
    pub(super) fn relay_lobby(&mut self, room: &str) {
        if self.links_of(room).is_empty() {
            return;
        }
        let waiting = self.lobby(room);
        self.relay_to_room(room, RelayMessage::Lobby { waiting });
    }

    /// Tells every link of `room` the same.
    pub(super) fn relay_to_room(&mut self, room: &str, message: RelayMessage) {
        for link in self.links_of(room).to_vec() {
            self.relay(link, message.clone());
        }
    }

    fn relay(&mut self, link: LinkId, message: RelayMessage) {
        self.outputs.push_back(Output::Relay { link, message });
    }

    /// An output of the room logic as the node is to carry it out: what is addressed to a
    /// remote participant goes to its node where it concerns the participant itself, and
    /// nowhere otherwise.
    pub(super) fn route(&self, output: Output) -> Option<Output> {
        // Nothing reaches a participant adrift: its link is closed.
        let origin = |peer: PeerId| {
            self.participants
                .get(&peer)
                .and_then(|participant| participant.origin)
                .filter(|(link, _)| self.links.contains_key(link))
        };
        let relayed = |peer: PeerId, message: fn(u64) -> RelayMessage| {
            origin(peer).map(|(link, at)| Output::Relay {
                link,
                message: message(at),
            })
        };
        match output {
            Output::RequestKeyframe { publisher, ssrc } if publisher.is_remote() => {
                let (link, peer) = origin(publisher)?;
                Some(Output::Relay {
                    link,
                    message: RelayMessage::Keyframe { peer, ssrc },
                })
            }
            Output::PublisherLayers {
                publisher,
                source,
                active,
            } if publisher.is_remote() => {
                let (link, peer) = origin(publisher)?;
                Some(Output::Relay {
                    link,
                    message: RelayMessage::Layers {
                        peer,
                        source,
                        wanted: active,
                    },
                })
            }
            Output::Request { to, request } if to.is_remote() => {
                let (link, peer) = origin(to)?;
                Some(Output::Relay {
                    link,
                    message: RelayMessage::Request { peer, request },
                })
            }
            Output::Close { peer, reason } if peer.is_remote() => {
                let (link, at) = origin(peer)?;
                Some(Output::Relay {
                    link,
                    message: RelayMessage::Close { peer: at, reason },
                })
            }
            Output::Roster {
                to,
                event: RosterEvent::Moderator { participant_id },
            } if to.is_remote() => {
                let own = self
                    .participants
                    .get(&to)
                    .is_some_and(|p| p.info.participant_id == participant_id);
                if own {
                    relayed(to, |peer| RelayMessage::MadeModerator { peer })
                } else {
                    None
                }
            }
            output if output.addressee().is_some_and(PeerId::is_remote) => None,
            output => Some(output),
        }
    }
}

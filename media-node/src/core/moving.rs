//! Participants who move, to another node of their room or back to this one, without the others
//! noticing more than a short freeze of their video.
//!
//! When a node is lost or drains, or a participant's connection fails, the page comes in again
//! (through its gateway, on another node or the same) under the same participant id. Everyone
//! else would otherwise see the participant leave (tiles go, down-tracks are removed: one
//! renegotiation for every subscriber) and come back (tiles and down-tracks are added: another
//! one). Renegotiating stalls a browser's decoding of every video it receives for a moment, so
//! each move would make every video of the room stutter twice. Instead:
//!
//! - A participant whose connection is lost (its connection here failed, its link closed, or
//!   its own node says so) is *adrift* for [`MOVE_GRACE`]: still in the room for everyone, the
//!   others' down-tracks of it kept, and the others told that its connection is interrupted.
//!   Its link opening again brings it back as it was; otherwise it leaves when the grace ends,
//!   unless it came in again meanwhile.
//! - A participant that comes in again (over another link, or here) replaces its old copy
//!   quietly: the others are not told that it left, only that it is there (which updates what
//!   they show of it), and the down-tracks of its old publications become *orphans*.
//! - The new copy's first publication of the same source and codec adopts an orphan's
//!   down-tracks: each continues its stream (sequence numbers, timestamps and picture ids) from
//!   the new publication's next keyframe, so no subscriber renegotiates. An orphan that nothing
//!   adopts within [`MOVE_GRACE`] is removed like any unpublished track.
//! - A copy still connected when the new one comes (its node drains, and the page closes its
//!   old connection only once it has a new one) goes when its connection closes, and as long
//!   as another copy is in the room nobody is told that the participant left.
//!
//! A participant who leaves (the leave button, a closed tab) is gone for everyone at once.

use std::time::{Duration, Instant};

use super::{Codec, Core, LeaveReason, PeerId, PublicationId, RosterEvent, Source, TICK};

/// How long a participant whose connection was lost stays in the room while it comes back,
/// and how long its old down-tracks wait for its new publications.
pub const MOVE_GRACE: Duration = Duration::from_secs(15);

/// The down-tracks of a publication whose publisher came in again under a new copy.
#[derive(Debug)]
pub(super) struct Orphan {
    room: String,
    participant_id: String,
    publication: PublicationId,
    /// When nothing has adopted it by then, it goes; set at the first tick after it is made.
    until: Option<Instant>,
}

impl Core {
    /// Participants of another node whose connection to the room is lost (their link closed,
    /// or their node says so): they stay, adrift, for [`MOVE_GRACE`].
    pub(super) fn set_adrift(&mut self, now: Instant, peers: Vec<PeerId>) {
        if peers.is_empty() {
            return;
        }
        for peer in peers {
            if !self.is_adrift(peer) {
                self.adrift.push((peer, now + MOVE_GRACE));
                self.tell_connection(peer, true);
            }
        }
        self.next_tick.get_or_insert(now + TICK);
    }

    /// Tells the others here that `peer`'s connection broke off, or is back (what is addressed
    /// to a participant without a connection, itself included, goes nowhere).
    pub(super) fn tell_connection(&mut self, peer: PeerId, interrupted: bool) {
        let Some(participant) = self.participants.get(&peer) else {
            return;
        };
        let room = participant.room.clone();
        let participant_id = participant.info.participant_id.clone();
        let event = RosterEvent::Connection {
            participant_id,
            interrupted,
        };
        self.tell_local(&room, event);
    }

    /// The connection of `peer`, a participant here, is lost: what it received goes, and it is
    /// adrift for [`MOVE_GRACE`] (its page may be on its way back), as the other nodes of its
    /// room are told. Nothing it published is taken from the others meanwhile.
    pub fn lose(&mut self, now: Instant, peer: PeerId) {
        let Some(participant) = self.participants.get(&peer) else {
            // Someone in the lobby.
            return self.leave(peer, LeaveReason::ConnectionLost);
        };
        if peer.is_remote() || self.is_adrift(peer) {
            return;
        }
        if self.has_another_copy(peer) {
            // Its page is in the room again already, through another node (this one drains):
            // the old copy goes (nobody is told that the person left, who is still there).
            return self.leave(peer, LeaveReason::ConnectionLost);
        }
        let room = participant.room.clone();
        self.unsubscribe_all(peer);
        self.relay_left(&room, peer, LeaveReason::ConnectionLost);
        self.set_adrift(now, vec![peer]);
    }

    /// Whether the participant `peer` is in its room under another [`PeerId`] too: its page
    /// came in again elsewhere while this copy was still there.
    pub(super) fn has_another_copy(&self, peer: PeerId) -> bool {
        let Some(participant) = self.participants.get(&peer) else {
            return false;
        };
        let id = &participant.info.participant_id;
        self.room_members(&participant.room).iter().any(|other| {
            *other != peer
                && self
                    .participants
                    .get(other)
                    .is_some_and(|p| p.info.participant_id == *id)
        })
    }

    /// What `peer`, who comes in or back, is told after its welcome: who in its room is adrift
    /// now (the others heard of it when it happened).
    pub fn adrift_notices(&self, peer: PeerId) -> Vec<RosterEvent> {
        let Some(room) = self.participants.get(&peer).map(|p| &p.room) else {
            return Vec::new();
        };
        self.adrift
            .iter()
            .filter(|(other, _)| *other != peer)
            .filter_map(|(other, _)| self.participants.get(other))
            .filter(|other| &other.room == room)
            .map(|other| RosterEvent::Connection {
                participant_id: other.info.participant_id.clone(),
                interrupted: true,
            })
            .collect()
    }

    /// Whether `peer`'s connection is lost and it may come back.
    pub(super) fn is_adrift(&self, peer: PeerId) -> bool {
        self.adrift.iter().any(|(other, _)| *other == peer)
    }

    /// `peer` is there again (its link opened again), or gone for good.
    pub(super) fn no_longer_adrift(&mut self, peer: PeerId) {
        self.adrift.retain(|(other, _)| *other != peer);
    }

    /// A participant that came in again (over another link, or here), known here as `stale`
    /// from before (from another node, or adrift here): its old copy leaves without the others
    /// being told, and its publications' down-tracks wait for its new ones.
    pub(super) fn replace_stale(&mut self, stale: PeerId) {
        let Some(participant) = self.participants.get_mut(&stale) else {
            return;
        };
        let room = participant.room.clone();
        let participant_id = participant.info.participant_id.clone();
        for id in std::mem::take(&mut participant.publications) {
            let Some(publication) = self.publications.get_mut(&id) else {
                continue;
            };
            for layer in &mut publication.layers {
                if let Some(ssrc) = layer.ssrc.take() {
                    self.published.remove(&(stale, ssrc));
                }
            }
            self.orphans.push(Orphan {
                room: room.clone(),
                participant_id: participant_id.clone(),
                publication: id,
                until: None,
            });
        }
        self.remove_participant(stale, None);
    }

    /// The down-tracks of `participant_id`'s old publication of `source` in `codec`, taken
    /// over by its new publication `id`: they continue from its next keyframe. Returns who
    /// keeps a down-track that way.
    pub(super) fn adopt_orphan(
        &mut self,
        room: &str,
        participant_id: &str,
        source: Source,
        codec: Codec,
        id: PublicationId,
    ) -> Vec<PeerId> {
        let found = self.orphans.iter().position(|orphan| {
            orphan.room == room
                && orphan.participant_id == participant_id
                && self
                    .publications
                    .get(&orphan.publication)
                    .is_some_and(|old| old.source == source && old.codec == codec)
        });
        let Some(index) = found else {
            return Vec::new();
        };
        let orphan = self.orphans.swap_remove(index);
        let Some(old) = self.publications.remove(&orphan.publication) else {
            return Vec::new();
        };
        let mut kept = Vec::new();
        for mut subscription in old.subscriptions {
            let ssrc = subscription.forwarder.ssrc();
            // Its subscriber left meanwhile: nothing of it is left to keep.
            if !self.participants.contains_key(&subscription.subscriber) {
                self.subscribed.remove(&(subscription.subscriber, ssrc));
                continue;
            }
            subscription.forwarder.rebase();
            subscription.waiting_since = None;
            self.subscribed.insert((subscription.subscriber, ssrc), id);
            kept.push(subscription.subscriber);
            if let Some(publication) = self.publications.get_mut(&id) {
                publication.subscriptions.push(subscription);
            }
        }
        kept
    }

    /// Participants adrift past their grace leave; orphans nothing adopted in time go.
    pub(super) fn expire_moves(&mut self, now: Instant) {
        let gone: Vec<PeerId> = self
            .adrift
            .iter()
            .filter(|(_, until)| *until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in gone {
            self.leave(peer, LeaveReason::ConnectionLost);
        }
        let mut expired = Vec::new();
        self.orphans.retain_mut(|orphan| {
            let until = *orphan.until.get_or_insert(now + MOVE_GRACE);
            let keep = until > now;
            if !keep {
                expired.push(orphan.publication);
            }
            keep
        });
        for id in expired {
            self.unpublish_id(id);
        }
    }

    /// Whether anything waits for [`Self::expire_moves`].
    pub(super) fn moves_pending(&self) -> bool {
        !self.adrift.is_empty() || !self.orphans.is_empty()
    }
}

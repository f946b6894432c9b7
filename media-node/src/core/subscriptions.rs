//! Publications and subscriptions: a track that a participant's offer names is announced, or
//! one (or a simulcast layer of one) that begins to arrive unannounced is published, and
//! everyone else in the room subscribed to it, each with a down-track of its own;
//! a down-track starts forwarding once negotiated, from a keyframe asked of the publisher; and
//! keyframe requests from subscribers reach the publisher, rate-limited and retried.
//!
//! In a large room (more than [`LARGE_ROOM`] participants: a council session streamed to
//! hundreds, a town meeting) a microphone or camera that is off when it is announced stays
//! *dormant*: nobody is subscribed to it until its participant first switches it on. Most
//! people in such a room only listen; negotiating their silent microphones and dark cameras
//! with everyone else would give each connection two down-tracks per person and a
//! renegotiation for everyone at every join. Once switched on, a track stays subscribed.

use std::collections::VecDeque;
use std::time::Instant;

use super::allocation::Paused;
use super::publication::{self, Publication, Subscription};
use super::{
    Core, Forwarder, KEYFRAME_RETRY, MediaKind, OfferedTrack, Output, PeerId, PublicationId,
    PublishedLayer, Source, TICK,
};

/// A room with more participants than this negotiates a microphone or camera that is off with
/// the others only once it is first switched on.
pub const LARGE_ROOM: usize = 25;

/// Whether `info` says that `source` is switched off.
fn is_off(info: &super::ParticipantInfo, source: Source) -> bool {
    match source {
        Source::Microphone => info.audio_muted,
        Source::Camera => info.video_muted,
        Source::Screen => false,
    }
}

impl Core {
    pub(super) fn next_ssrc(&mut self, subscriber: PeerId) -> u32 {
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

    pub(super) fn subscribe(&mut self, subscriber: PeerId, id: PublicationId) {
        // A participant of another node gets its media from its own node, one adrift has no
        // connection; a dormant track nobody gets.
        if subscriber.is_remote()
            || self.is_adrift(subscriber)
            || self.publications.get(&id).is_some_and(|p| p.dormant)
        {
            return;
        }
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
            short_since: None,
            graced_at: None,
            started_at_estimate: None,
            rose_at: None,
        });
        self.outputs.push_back(Output::AddDownTrack(
            publication.down_track(subscriber, ssrc),
        ));
        self.subscribed.insert((subscriber, ssrc), id);
    }

    /// A track that a participant's offer names, before anything of it arrives: everyone
    /// else in the room is subscribed to it now, so that their renegotiation overlaps the
    /// publisher's connection setup. Idempotent per track.
    pub fn announce(
        &mut self,
        now: Instant,
        peer: PeerId,
        offered: OfferedTrack,
    ) -> Option<PublicationId> {
        match self.publication_of_track(peer, offered.track) {
            Some(id) => Some(id),
            None => self.create_publication(now, peer, offered),
        }
    }

    /// A track, or one simulcast layer of it, began to arrive. A track announced before keeps
    /// its subscribers (their down-tracks start at once when its lowest layer is the first
    /// thing to arrive); otherwise everyone else in the room is subscribed to it now.
    /// Idempotent: the same SSRC opening again (after a renegotiation) changes nothing.
    pub fn publish(
        &mut self,
        now: Instant,
        peer: PeerId,
        layer: PublishedLayer,
    ) -> Option<PublicationId> {
        if let Some((id, _)) = self.published.get(&(peer, layer.ssrc)) {
            return Some(*id);
        }
        let mut existing = self.publication_of_track(peer, layer.track);
        if let Some(id) = existing
            && self.publications.get(&id)?.codec != layer.codec
        {
            // Announced in one codec, arriving in another: the subscribers' down-tracks are
            // set up anew for what arrives.
            self.unpublish_id(id);
            if let Some(participant) = self.participants.get_mut(&peer) {
                participant.publications.retain(|other| *other != id);
            }
            existing = None;
        }
        let id = match existing {
            Some(id) => id,
            None if layer.layer < layer.layer_count.max(1) => {
                let offered = OfferedTrack {
                    track: layer.track,
                    layer_count: layer.layer_count,
                    codec: layer.codec,
                    source: layer.source,
                };
                self.create_publication(now, peer, offered)?
            }
            None => return None,
        };
        let publication = self.publications.get_mut(&id)?;
        let nothing_arrived = publication.layers.iter().all(|l| l.ssrc.is_none());
        let slot = publication.layers.get_mut(layer.layer)?;
        if let Some(old) = slot.ssrc.replace(layer.ssrc) {
            self.published.remove(&(peer, old));
        }
        self.published.insert((peer, layer.ssrc), (id, layer.layer));
        let relayed = !publication.relays.is_empty();
        if nothing_arrived && layer.layer == 0 {
            // Down-tracks negotiated while the track was only announced start with this, its
            // first packet (a keyframe for video), as a down-track that becomes ready does.
            for index in 0..publication.subscriptions.len() {
                let subscription = &mut publication.subscriptions[index];
                if subscription.ready && subscription.forwarder.target().is_none() {
                    subscription.forwarder.set_target(Some(0));
                    request_keyframe_if_waiting(now, publication, index, &mut self.outputs);
                }
            }
        }
        if relayed {
            self.relay_publication(id);
        }
        Some(id)
    }

    /// The publication of one of `peer`'s tracks, if it has one.
    pub(super) fn publication_of_track(&self, peer: PeerId, track: u64) -> Option<PublicationId> {
        let participant = self.participants.get(&peer)?;
        participant
            .publications
            .iter()
            .copied()
            .find(|id| self.publications.get(id).is_some_and(|p| p.track == track))
    }

    /// A new publication of `peer`'s, with everyone else in the room subscribed to it.
    fn create_publication(
        &mut self,
        now: Instant,
        peer: PeerId,
        offered: OfferedTrack,
    ) -> Option<PublicationId> {
        let participant = self.participants.get(&peer)?;
        self.next_tick.get_or_insert(now + TICK);
        let id = PublicationId(self.next_publication);
        self.next_publication += 1;
        let participant_id = participant.info.participant_id.clone();
        let stream_id = match offered.source {
            Source::Screen => format!("{participant_id}:screen"),
            Source::Microphone | Source::Camera => participant_id.clone(),
        };
        let track_id = format!("{participant_id}-{}", offered.source.as_str());
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
            offered.track,
            offered.codec,
            offered.source,
            stream_id,
            track_id,
            offered.layer_count.min(super::MAX_LAYERS),
        );
        let room = participant.room.clone();
        let dormant = self.room_members(&room).len() > LARGE_ROOM
            && is_off(&participant.info, offered.source);
        publication.dormant = dormant;
        publication.relays = self.links_of_peer(peer);
        self.participants.get_mut(&peer)?.publications.push(id);
        self.publications.insert(id, publication);
        self.relay_publication(id);
        // Back from another node: who received its old copy keeps that down-track.
        let kept = if dormant {
            Vec::new()
        } else {
            self.adopt_orphan(&room, &participant_id, offered.source, offered.codec, id)
        };
        for other in self.room_members(&room).to_vec() {
            if other != peer && !kept.contains(&other) {
                self.subscribe(other, id);
            }
        }
        Some(id)
    }

    /// Subscribes everyone else in the room to `peer`'s dormant tracks that are switched on
    /// now.
    pub(super) fn wake(&mut self, peer: PeerId) {
        let Some(participant) = self.participants.get(&peer) else {
            return;
        };
        let room = participant.room.clone();
        let woken: Vec<PublicationId> = participant
            .publications
            .iter()
            .copied()
            .filter(|id| {
                self.publications
                    .get(id)
                    .is_some_and(|p| p.dormant && !is_off(&participant.info, p.source))
            })
            .collect();
        let participant_id = participant.info.participant_id.clone();
        for id in woken {
            let Some(publication) = self.publications.get_mut(&id) else {
                continue;
            };
            publication.dormant = false;
            let (source, codec) = (publication.source, publication.codec);
            let kept = self.adopt_orphan(&room, &participant_id, source, codec, id);
            for other in self.room_members(&room).to_vec() {
                if other != peer && !kept.contains(&other) {
                    self.subscribe(other, id);
                }
            }
        }
    }

    pub(super) fn unpublish_id(&mut self, id: PublicationId) {
        let Some(publication) = self.publications.remove(&id) else {
            return;
        };
        for link in &publication.relays {
            self.outputs.push_back(Output::Relay {
                link: *link,
                message: super::RelayMessage::Unpublished {
                    peer: publication.publisher.0,
                    track: id.0,
                },
            });
        }
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

    /// Asks again for keyframes that subscribers have waited on too long.
    pub(super) fn retry_keyframes(&mut self, now: Instant) {
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
pub(super) fn request_keyframe_if_waiting(
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
pub(super) fn request_layer_keyframe(
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

//! Publications and subscriptions: a track (or simulcast layer) that begins to arrive is
//! published and everyone else in the room subscribed to it, each with a down-track of its own;
//! a down-track starts forwarding once negotiated, from a keyframe asked of the publisher; and
//! keyframe requests from subscribers reach the publisher, rate-limited and retried.

use std::collections::VecDeque;
use std::time::Instant;

use super::allocation::Paused;
use super::publication::{self, Publication, Subscription};
use super::{
    Core, Forwarder, KEYFRAME_RETRY, MediaKind, Output, PeerId, PublicationId, PublishedLayer,
    Source, TICK,
};

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

    pub(super) fn unpublish_id(&mut self, id: PublicationId) {
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

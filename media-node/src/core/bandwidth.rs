//! Each subscriber's downlink shared out among the videos of its room, every tick: the estimate
//! it is given, the choice of layer per video ([`super::allocation`]'s algorithm), the layers
//! publishers are asked to encode, and how far the estimate should grow (what the congestion
//! control probes for, and the padding it probes with).

use std::collections::HashMap;
use std::time::Instant;

use super::allocation::{self, Choice, Demand, Paused};
use super::publication::Publication;
use super::subscriptions::request_keyframe_if_waiting;
use super::{Core, DEFAULT_ESTIMATE, MediaKind, Output, PeerId, PublicationId, Source, VideoState};

impl Core {
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

    /// Takes `count` sequence numbers for padding-only packets that probe `subscriber`'s line,
    /// on one of its ready video down-tracks that the node can send on (`sendable`; one being
    /// forwarded now if there is one, or else one that never played: its sequence starts with
    /// the padding): returns that down-track's SSRC, the first sequence number and the
    /// timestamp to send with. `None` when the subscriber has no such down-track.
    pub fn probe_padding(
        &mut self,
        now: Instant,
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
            let (first, timestamp) = forwarder.take_padding(now, count);
            Some((ssrc, first, timestamp))
        })
    }

    /// Shares out each member's downlink among the videos of the room, then tells publishers
    /// which layers somebody needs.
    pub(super) fn allocate_room(&mut self, now: Instant, room: &str) {
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
        for (id, flags) in &mut wanted {
            if let Some(publication) = self.publications.get(id) {
                publication.add_relay_wants(flags);
            }
        }
        for subscriber in members {
            if subscriber.is_remote() {
                continue;
            }
            let Some(participant) = self.participants.get(&subscriber) else {
                continue;
            };
            let audio_cost: u64 = audio
                .iter()
                .filter_map(|id| self.publications.get(id))
                .filter(|p| p.publisher != subscriber)
                .map(Publication::audio_cost)
                .sum();
            let estimate = participant.estimate.unwrap_or(DEFAULT_ESTIMATE);
            let budget = estimate.saturating_sub(audio_cost);
            let (targets, demands) = self.demands_of(now, subscriber, &videos, &priorities);
            let mut choices = allocation::allocate(budget, last_n, &demands);
            self.grace_pauses(now, subscriber, &targets, &mut choices);
            let used: u64 = demands
                .iter()
                .zip(&choices)
                .filter_map(|(demand, choice)| {
                    Some(demand.layers.get(*choice.as_ref().ok()?)?.bitrate)
                })
                .sum();
            if demands.iter().zip(&choices).any(|(demand, choice)| {
                demand.current.is_some() && *choice == Err(Paused::Bandwidth)
            }) {
                tracing::debug!(
                    subscriber = subscriber.0,
                    estimate,
                    audio_cost,
                    used,
                    videos = demands.len(),
                    "a playing video paused for bandwidth"
                );
            }
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
                self.apply_choice(now, id, subscriber, choice, estimate);
            }
        }
        self.ask_for_layers(now, wanted);
    }

    /// One subscriber's demand for each video of its room it has a ready down-track of, with
    /// the publication and the indices of its usable layers, in the same order.
    fn demands_of(
        &self,
        now: Instant,
        subscriber: PeerId,
        videos: &[PublicationId],
        priorities: &HashMap<PublicationId, u32>,
    ) -> (Vec<(PublicationId, Vec<usize>)>, Vec<Demand>) {
        let mut targets: Vec<(PublicationId, Vec<usize>)> = Vec::new();
        let mut demands: Vec<Demand> = Vec::new();
        let Some(participant) = self.participants.get(&subscriber) else {
            return (targets, demands);
        };
        for id in videos {
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
        (targets, demands)
    }

    /// Keeps a video that plays on its lowest layer for
    /// [`PAUSE_GRACE`](super::publication::PAUSE_GRACE) when the allocation would pause it for
    /// bandwidth (positions in `choices` are into the usable layers of `targets`).
    fn grace_pauses(
        &mut self,
        now: Instant,
        subscriber: PeerId,
        targets: &[(PublicationId, Vec<usize>)],
        choices: &mut [Choice],
    ) {
        for ((id, _), choice) in targets.iter().zip(choices.iter_mut()) {
            let Some(subscription) = self.publications.get_mut(id).and_then(|p| {
                p.subscriptions
                    .iter_mut()
                    .find(|s| s.subscriber == subscriber)
            }) else {
                continue;
            };
            if subscription.in_grace(now, *choice) {
                *choice = Ok(0);
            }
        }
    }

    /// Tells each publisher whose wanted layers changed which layers to encode.
    fn ask_for_layers(&mut self, now: Instant, wanted: HashMap<PublicationId, Vec<bool>>) {
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
        estimate: u64,
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
            subscription.choice_changed(now, previous, choice, estimate);
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
}

//! Rooms and their rosters: who joins and leaves, what each participant tells the others (their
//! microphone, camera and screen, chat), and what they ask for themselves (audio only, how large
//! they show each video).

use std::time::Instant;

use super::{
    CHAT_BURST, CHAT_WINDOW, ChatError, ChatMessage, Core, JoinError, JoinRequest, Joined,
    LeaveReason, MAX_CHAT_CHARS, MAX_VIEWPORTS, Output, Participant, ParticipantInfo, PeerId,
    PublicationId, RosterEvent,
};

impl Core {
    /// What a participant is told when it comes in or back: its own id and role, everyone
    /// else, and where the room stands.
    pub fn roster_for(&self, peer: PeerId) -> Option<RosterEvent> {
        let participant = self.participants.get(&peer)?;
        let room = self.rooms.get(&participant.room)?;
        Some(RosterEvent::Welcome {
            participant_id: participant.info.participant_id.clone(),
            others: room
                .members
                .iter()
                .filter(|other| **other != peer)
                .filter_map(|other| self.participants.get(other))
                .map(|other| other.info.clone())
                .collect(),
            moderator: participant.info.moderator,
            locked: room.locked,
            hands: self.hand_ids(&room.hands),
        })
    }

    /// Lets `peer` into a room, or into its lobby: someone who must wait for a moderator
    /// waits (and the moderators hear of it); in a locked room only moderators come in.
    pub fn join(&mut self, peer: PeerId, request: JoinRequest) -> Result<Joined, JoinError> {
        if self.participants.contains_key(&peer) || self.is_waiting(peer) {
            return Err(JoinError::AlreadyJoined);
        }
        let room = self.rooms.get(&request.room);
        if room.is_some_and(|room| room.locked) && !request.moderator {
            return Err(JoinError::Locked);
        }
        if request.lobby && !request.moderator {
            self.knock(peer, request)?;
            return Ok(Joined::Waiting);
        }
        self.enter(peer, request)?;
        Ok(Joined::In)
    }

    /// Admits `peer` to a room: it is welcomed with the list of the others, the others learn
    /// of it, and it is subscribed to everything already published there. It moderates if its
    /// grant says so, or if it may be the first and nobody in the room moderates.
    pub(super) fn enter(&mut self, peer: PeerId, request: JoinRequest) -> Result<(), JoinError> {
        // Someone who moved here from another node of the room (whose node was lost or drains)
        // may still be known from there, or from here, adrift since their connection was lost:
        // here they are now.
        if let Some(stale) = self.participant_in(&request.room, &request.participant_id)
            && (stale.is_remote() || self.is_adrift(stale))
        {
            self.replace_stale(stale);
        }
        let members = self.room_members(&request.room).len();
        if request.max_participants > 0 && members >= request.max_participants as usize {
            return Err(JoinError::RoomFull {
                limit: request.max_participants,
            });
        }
        let moderated = self.room_members(&request.room).iter().any(|member| {
            self.participants
                .get(member)
                .is_some_and(|p| p.info.moderator)
        });
        let [audio_muted, video_muted, screen_sharing] =
            self.waiting_media.remove(&peer).unwrap_or_default();
        let info = ParticipantInfo {
            participant_id: request.participant_id,
            display_name: request.display_name,
            audio_muted,
            video_muted,
            screen_sharing,
            moderator: request.moderator || (request.first_moderates && !moderated),
        };
        let others: Vec<PeerId> = self.room_members(&request.room).to_vec();
        for other in &others {
            self.outputs.push_back(Output::Roster {
                to: *other,
                event: RosterEvent::Joined(info.clone()),
            });
        }
        let room = self.rooms.entry(request.room.clone()).or_default();
        room.members.push(peer);
        room.last_n = request.last_n;
        let speaker = room.speakers.dominant();
        let moderator = info.moderator;
        let room_key = request.room.clone();
        self.participants
            .insert(peer, Participant::new(request.room, info, None));
        if let Some(welcome) = self.roster_for(peer) {
            self.outputs.push_back(Output::Roster {
                to: peer,
                event: welcome,
            });
        }
        for event in self.adrift_notices(peer) {
            self.outputs.push_back(Output::Roster { to: peer, event });
        }
        if let Some(speaker) = speaker.and_then(|speaker| self.participants.get(&speaker)) {
            self.outputs.push_back(Output::DominantSpeaker {
                to: peer,
                participant_id: speaker.info.participant_id.clone(),
            });
        }
        if moderator && self.someone_waits(&room_key) {
            self.tell_moderators_who_waits(&room_key);
        }
        if moderator {
            self.tell_waiting(&room_key);
        }
        let existing: Vec<PublicationId> = others
            .iter()
            .filter_map(|other| self.participants.get(other))
            .flat_map(|other| other.publications.iter().copied())
            .collect();
        for publication in existing {
            self.subscribe(peer, publication);
        }
        self.relay_participant(peer);
        Ok(())
    }

    /// Removes `peer` from its room and frees everything that belonged to it: its
    /// publications (and every down-track of them) and its own down-tracks.
    pub fn leave(&mut self, peer: PeerId, reason: LeaveReason) {
        self.remove_participant(peer, Some(reason));
    }

    /// [`Self::leave`], telling the others why; without a reason they are not told (a
    /// participant that is there again under a new copy, see `moving`). Nor are they told while
    /// another copy of the participant stays in the room: they still see the person.
    pub(super) fn remove_participant(&mut self, peer: PeerId, reason: Option<LeaveReason>) {
        self.no_longer_adrift(peer);
        let told = reason.filter(|_| !self.has_another_copy(peer));
        let Some(participant) = self.participants.remove(&peer) else {
            self.stop_waiting(peer);
            self.waiting_media.remove(&peer);
            return;
        };
        match (participant.origin, reason) {
            (Some(origin), _) => {
                self.remote.remove(&origin);
            }
            (None, Some(reason)) => self.relay_left(&participant.room, peer, reason),
            (None, None) => {}
        }
        for id in &participant.publications {
            // The other nodes hear that it left, which takes its publications with it there
            // (or keeps them while it may come back).
            if let Some(publication) = self.publications.get_mut(id) {
                publication.relays.clear();
            }
            self.unpublish_id(*id);
        }
        self.unsubscribe_all(peer);
        let Some(room) = self.rooms.get_mut(&participant.room) else {
            return;
        };
        room.members.retain(|member| *member != peer);
        room.speakers.forget(peer);
        let had_hand = room.hands.contains(&peer);
        room.hands.retain(|hand| *hand != peer);
        if let Some(reason) = told {
            for other in &room.members {
                self.outputs.push_back(Output::Roster {
                    to: *other,
                    event: RosterEvent::Left {
                        participant_id: participant.info.participant_id.clone(),
                        reason,
                    },
                });
            }
        }
        if room.is_unused() {
            self.rooms.remove(&participant.room);
            return;
        }
        if had_hand {
            self.tell_hands(&participant.room);
        }
        if participant.info.moderator {
            self.pass_on_moderation(&participant.room);
        }
    }

    /// Forgets every down-track `peer` receives (its connection is gone).
    pub(super) fn unsubscribe_all(&mut self, peer: PeerId) {
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
            if self.is_waiting(peer) {
                let state = [audio_muted, video_muted, screen_sharing];
                self.waiting_media.insert(peer, state);
            }
            return;
        };
        // Switching on what a moderator switched off is the participant's own decision.
        participant
            .held
            .release(audio_muted, video_muted, screen_sharing);
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
        self.wake(peer);
        self.relay_participant(peer);
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
        self.deliver_chat(&room, Some(peer), &message);
        for link in self.links_of(&room).to_vec() {
            self.outputs.push_back(Output::Relay {
                link,
                message: super::RelayMessage::Chat(message.clone()),
            });
        }
        Ok(())
    }

    /// Delivers a chat message to the local members of `room` but its sender.
    pub(super) fn deliver_chat(
        &mut self,
        room: &str,
        sender: Option<PeerId>,
        message: &ChatMessage,
    ) {
        for other in self.room_members(room).to_vec() {
            if Some(other) != sender && !other.is_remote() {
                self.outputs.push_back(Output::Chat {
                    to: other,
                    message: message.clone(),
                });
            }
        }
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
}

//! Moderators and what they may do, decided where the meeting is: the lobby (who waits, who is
//! let in), microphones, cameras and screens switched off, people removed, the room locked, the
//! meeting ended; raised hands for everyone; and the role passed on when the last moderator
//! leaves. Who moderates comes with the grant (a moderator's link or password, or the first
//! person into an ad-hoc room); every action is checked here, so a participant who sends one
//! gets an error and nothing happens.

use super::{
    Action, Core, Ending, JoinError, JoinRequest, LeaveReason, LinkId, ModerationError,
    ModeratorRequest, Output, PeerId, RelayMessage, RosterEvent, Source,
};

/// The most people who may wait in one room's lobby.
pub const MAX_WAITING: usize = 100;

/// What a moderator switched off and the participant has not switched on again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    microphone: bool,
    camera: bool,
    screen: bool,
}

impl Held {
    /// Whether packets of `source` are held back.
    pub fn holds(self, source: Source) -> bool {
        match source {
            Source::Microphone => self.microphone,
            Source::Camera => self.camera,
            Source::Screen => self.screen,
        }
    }

    /// Releases what the participant switched on again themselves.
    pub fn release(&mut self, audio_muted: bool, video_muted: bool, screen_sharing: bool) {
        self.microphone &= audio_muted;
        self.camera &= video_muted;
        self.screen &= !screen_sharing;
    }
}

impl Core {
    /// Whether `peer` waits in a lobby.
    pub fn is_waiting(&self, peer: PeerId) -> bool {
        self.rooms
            .values()
            .any(|room| room.waiting.iter().any(|(waiting, _)| *waiting == peer))
    }

    /// Who waits in the lobby of `room` on this node.
    pub fn room_waiting(&self, room: &str) -> Vec<PeerId> {
        self.rooms
            .get(room)
            .map(|room| room.waiting.iter().map(|(peer, _)| *peer).collect())
            .unwrap_or_default()
    }

    /// `peer` waits in the lobby of its room; it and the moderators hear of it.
    pub(super) fn knock(&mut self, peer: PeerId, request: JoinRequest) -> Result<(), JoinError> {
        let key = request.room.clone();
        let room = self.rooms.entry(key.clone()).or_default();
        if room.waiting.len() >= MAX_WAITING {
            return Err(JoinError::LobbyFull);
        }
        room.waiting.push((peer, request));
        let moderator_present = self.moderator_present(&key);
        self.outputs.push_back(Output::Waiting {
            to: peer,
            moderator_present,
        });
        self.tell_moderators_who_waits(&key);
        self.relay_lobby(&key);
        Ok(())
    }

    /// `peer` no longer waits (it left, or was let in or not).
    pub(super) fn stop_waiting(&mut self, peer: PeerId) -> Option<JoinRequest> {
        let (key, index) = self.rooms.iter().find_map(|(key, room)| {
            let index = room.waiting.iter().position(|(p, _)| *p == peer)?;
            Some((key.clone(), index))
        })?;
        let room = self.rooms.get_mut(&key)?;
        let (_, request) = room.waiting.remove(index);
        if room.is_unused() {
            self.rooms.remove(&key);
        } else {
            self.tell_moderators_who_waits(&key);
            self.relay_lobby(&key);
        }
        Some(request)
    }

    /// Raises or lowers `peer`'s own hand; everyone sees the hands in order.
    pub fn raise_hand(&mut self, peer: PeerId, raised: bool) {
        let Some(key) = self.participants.get(&peer).map(|p| p.room.clone()) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&key) else {
            return;
        };
        let up = room.hands.contains(&peer);
        if raised == up {
            return;
        }
        if raised {
            room.hands.push(peer);
        } else {
            room.hands.retain(|hand| *hand != peer);
        }
        self.tell_hands(&key);
        if !peer.is_remote() {
            let message = RelayMessage::Hand {
                peer: peer.0,
                raised,
            };
            self.relay_to_room(&key, message);
        }
    }

    /// Carries out a moderator's `action` (on the participant `target`, for the actions on one
    /// participant), if `by` moderates.
    pub fn moderate(
        &mut self,
        by: PeerId,
        action: Action,
        target: &str,
    ) -> Result<(), ModerationError> {
        let moderator = self
            .participants
            .get(&by)
            .filter(|p| p.info.moderator)
            .ok_or(ModerationError::NotModerator)?;
        let key = moderator.room.clone();
        match action {
            Action::Admit | Action::Deny => {
                let admit = action == Action::Admit;
                match self.waiting_in(&key, target) {
                    Ok(peer) => self.let_in(peer, admit)?,
                    // Someone who waits on a linked node: that node lets them in.
                    Err(error) => {
                        let link = self.waiting_at(&key, target).ok_or(error)?;
                        let participant_id = target.to_owned();
                        self.outputs.push_back(Output::Relay {
                            link,
                            message: RelayMessage::Admit {
                                participant_id,
                                admit,
                            },
                        });
                    }
                }
            }
            Action::Mute => self.hold(self.member(&key, target)?, Source::Microphone),
            Action::StopCamera => self.hold(self.member(&key, target)?, Source::Camera),
            Action::StopScreen => self.hold(self.member(&key, target)?, Source::Screen),
            Action::MuteAll => {
                for member in self.room_members(&key).to_vec() {
                    if self
                        .participants
                        .get(&member)
                        .is_some_and(|p| !p.info.moderator)
                    {
                        self.hold(member, Source::Microphone);
                    }
                }
            }
            Action::AskUnmute => {
                let to = self.member(&key, target)?;
                let request = ModeratorRequest::Unmute;
                self.outputs.push_back(Output::Request { to, request });
            }
            Action::Remove => self.end(self.member(&key, target)?, Ending::Removed),
            Action::MakeModerator => self.make_moderator(self.member(&key, target)?),
            Action::LowerHand => {
                let peer = self.member(&key, target)?;
                // Its own node lowers a remote participant's hand and tells every node.
                match self.participants.get(&peer).and_then(|p| p.origin) {
                    Some((link, at)) => self.outputs.push_back(Output::Relay {
                        link,
                        message: RelayMessage::LowerHand { peer: at },
                    }),
                    None => self.raise_hand(peer, false),
                }
            }
            Action::Lock | Action::Unlock => {
                let locked = action == Action::Lock;
                if let Some(room) = self.rooms.get_mut(&key) {
                    room.locked = locked;
                }
                self.tell_room(&key, RosterEvent::Locked(locked));
                self.relay_to_room(&key, RelayMessage::Locked(locked));
            }
            Action::End => {
                let room = self.rooms.get(&key);
                let everyone: Vec<PeerId> = room
                    .map(|room| {
                        let waiting = room.waiting.iter().map(|(peer, _)| *peer);
                        room.members.iter().copied().chain(waiting).collect()
                    })
                    .unwrap_or_default();
                // Those who wait on linked nodes are not let in.
                let waiting_elsewhere: Vec<(LinkId, String)> = room
                    .into_iter()
                    .flat_map(|room| &room.remote_waiting)
                    .flat_map(|(link, waiting)| waiting.iter().map(|(id, _)| (*link, id.clone())))
                    .collect();
                for peer in everyone {
                    self.end(peer, Ending::Ended);
                }
                for (link, participant_id) in waiting_elsewhere {
                    let message = RelayMessage::Admit {
                        participant_id,
                        admit: false,
                    };
                    self.outputs.push_back(Output::Relay { link, message });
                }
            }
        }
        Ok(())
    }

    /// Lets `peer`, who waits in a lobby here, in (`admit`) or not.
    pub(super) fn let_in(&mut self, peer: PeerId, admit: bool) -> Result<(), ModerationError> {
        let request = self
            .stop_waiting(peer)
            .ok_or(ModerationError::NoSuchParticipant)?;
        if !admit {
            self.end(peer, Ending::Denied);
        } else if self.enter(peer, request).is_err() {
            // The room filled up while they waited.
            self.end(peer, Ending::Denied);
        }
        Ok(())
    }

    /// After the last moderator left: the one who has been in the room longest moderates now.
    pub(super) fn pass_on_moderation(&mut self, key: &str) {
        let members = self.room_members(key).to_vec();
        let moderated = members.iter().any(|member| {
            self.participants
                .get(member)
                .is_some_and(|p| p.info.moderator)
        });
        // In a room that spans nodes every node picks the same one, by id, and only its own
        // node makes it a moderator (and tells the others).
        let spans = !self.links_of(key).is_empty();
        let first = if spans {
            members
                .iter()
                .filter_map(|member| Some((self.participants.get(member)?, *member)))
                .min_by(|(a, _), (b, _)| a.info.participant_id.cmp(&b.info.participant_id))
                .map(|(_, member)| member)
                .filter(|member| !member.is_remote())
        } else {
            members.first().copied()
        };
        if let (false, Some(first)) = (moderated, first) {
            self.make_moderator(first);
        }
        self.tell_waiting(key);
    }

    /// Tells those in the lobby of `key` that they wait, and whether a moderator is there.
    pub(super) fn tell_waiting(&mut self, key: &str) {
        let moderator_present = self.moderator_present(key);
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        for (to, _) in &room.waiting {
            self.outputs.push_back(Output::Waiting {
                to: *to,
                moderator_present,
            });
        }
    }

    /// Whether a moderator is in the meeting in `key`.
    fn moderator_present(&self, key: &str) -> bool {
        self.room_members(key).iter().any(|member| {
            self.participants
                .get(member)
                .is_some_and(|p| p.info.moderator)
        })
    }

    /// Whether anyone waits in the lobby of `key`: only then has a new moderator something to
    /// be told.
    pub(super) fn someone_waits(&self, key: &str) -> bool {
        self.rooms.get(key).is_some_and(|room| {
            !room.waiting.is_empty() || room.remote_waiting.iter().any(|(_, w)| !w.is_empty())
        })
    }

    /// Tells the moderators of `key` here who waits in its lobby, here and on linked nodes
    /// (the moderators on those nodes are told by their own).
    pub(super) fn tell_moderators_who_waits(&mut self, key: &str) {
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        let waiting: Vec<(String, String)> = self
            .lobby(key)
            .into_iter()
            .chain(
                room.remote_waiting
                    .iter()
                    .flat_map(|(_, w)| w.iter().cloned()),
            )
            .collect();
        for member in &room.members {
            if !member.is_remote()
                && self
                    .participants
                    .get(member)
                    .is_some_and(|p| p.info.moderator)
            {
                self.outputs.push_back(Output::Knocking {
                    to: *member,
                    waiting: waiting.clone(),
                });
            }
        }
    }

    /// Tells everyone in `key` the raised hands.
    pub(super) fn tell_hands(&mut self, key: &str) {
        let hands = self
            .rooms
            .get(key)
            .map(|room| self.hand_ids(&room.hands))
            .unwrap_or_default();
        self.tell_room(key, RosterEvent::Hands(hands));
    }

    /// The participant ids of `hands`.
    pub(super) fn hand_ids(&self, hands: &[PeerId]) -> Vec<String> {
        hands
            .iter()
            .filter_map(|hand| self.participants.get(hand))
            .map(|p| p.info.participant_id.clone())
            .collect()
    }

    fn tell_room(&mut self, key: &str, event: RosterEvent) {
        for to in self.room_members(key).to_vec() {
            self.outputs.push_back(Output::Roster {
                to,
                event: event.clone(),
            });
        }
    }

    pub(super) fn make_moderator(&mut self, peer: PeerId) {
        let Some(participant) = self.participants.get_mut(&peer) else {
            return;
        };
        if participant.info.moderator {
            return;
        }
        participant.info.moderator = true;
        let participant_id = participant.info.participant_id.clone();
        let key = participant.room.clone();
        self.tell_room(&key, RosterEvent::Moderator { participant_id });
        if self.someone_waits(&key) {
            self.tell_moderators_who_waits(&key);
        }
        self.tell_waiting(&key);
        self.relay_participant(peer);
    }

    /// Switches off `source` of `peer`: its packets are held back until the participant
    /// switches it on again, the others see it off, and the participant is told.
    pub(super) fn hold(&mut self, peer: PeerId, source: Source) {
        let Some(participant) = self.participants.get_mut(&peer) else {
            return;
        };
        let info = &mut participant.info;
        let request = match source {
            Source::Microphone => {
                participant.held.microphone = true;
                info.audio_muted = true;
                ModeratorRequest::Muted
            }
            Source::Camera => {
                participant.held.camera = true;
                info.video_muted = true;
                ModeratorRequest::CameraStopped
            }
            Source::Screen => {
                participant.held.screen = true;
                info.screen_sharing = false;
                ModeratorRequest::ScreenStopped
            }
        };
        let event = RosterEvent::Media {
            participant_id: info.participant_id.clone(),
            audio_muted: info.audio_muted,
            video_muted: info.video_muted,
            screen_sharing: info.screen_sharing,
        };
        let key = participant.room.clone();
        self.tell_room(&key, event);
        self.outputs
            .push_back(Output::Request { to: peer, request });
        self.relay_participant(peer);
    }

    /// Ends `peer`'s session (over its link, if it is another node's). One whose connection is
    /// lost already leaves at once: a page of it that comes back joins anew.
    pub(super) fn end(&mut self, peer: PeerId, reason: Ending) {
        // Addressed now, while it is still in the room.
        let close = self.route(Output::Close { peer, reason });
        self.outputs.extend(close);
        if self.is_adrift(peer) {
            self.leave(peer, LeaveReason::Left);
        }
    }

    fn member(&self, key: &str, participant_id: &str) -> Result<PeerId, ModerationError> {
        self.participant_in(key, participant_id)
            .ok_or(ModerationError::NoSuchParticipant)
    }

    /// Who waits in the lobby of `key` here (participant id, display name), first come first.
    pub(super) fn lobby(&self, key: &str) -> Vec<(String, String)> {
        self.rooms.get(key).map_or_else(Vec::new, |room| {
            room.waiting
                .iter()
                .map(|(_, request)| (request.participant_id.clone(), request.display_name.clone()))
                .collect()
        })
    }

    /// The link to the node where `participant_id` waits in the lobby of `key`.
    fn waiting_at(&self, key: &str, participant_id: &str) -> Option<LinkId> {
        let room = self.rooms.get(key)?;
        room.remote_waiting
            .iter()
            .find(|(_, waiting)| waiting.iter().any(|(id, _)| id == participant_id))
            .map(|(link, _)| *link)
    }

    fn waiting_in(&self, key: &str, participant_id: &str) -> Result<PeerId, ModerationError> {
        self.rooms
            .get(key)
            .and_then(|room| {
                room.waiting
                    .iter()
                    .find(|(_, request)| request.participant_id == participant_id)
            })
            .map(|(peer, _)| *peer)
            .ok_or(ModerationError::NoSuchParticipant)
    }
}

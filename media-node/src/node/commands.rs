//! What the control plane asks of the node: admit a participant, relay a client's signal, close
//! a session or a room, resume a session, drain.

use std::time::{Duration, Instant};

use rtc::sansio::Protocol;
use tracing::{debug, info, warn};
use treffpunkt_proto::v1::{self, ResumeOutcome, signal::Kind as SignalKind};

use super::{Admission, Command, Event, Node, Resume, signal};
use crate::core::{JoinError, JoinRequest, LeaveReason, ModerationError, PeerId};
use crate::error::Error;
use crate::session::{Negotiation, Session};

/// The most viewports one signal may report.
const MAX_VIEWPORTS: usize = 256;

/// The client's error code for a refused signal.
fn error_code(error: &Error) -> &'static str {
    match error {
        Error::BadSdp(_) => "bad-sdp",
        Error::Negotiation(_) => "negotiation",
        _ => "unavailable",
    }
}

impl Node {
    pub(super) fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Open(admission) => self.open(now, admission),
            Command::Signal { session_id, signal } => {
                let Some(peer) = self.by_session_id.get(&session_id).copied() else {
                    debug!("signal for an unknown session");
                    return;
                };
                self.on_signal(now, peer, signal);
            }
            Command::Close { session_id } => {
                if let Some(peer) = self.by_session_id.get(&session_id).copied() {
                    let detail = "closed by the control plane";
                    self.close_session(now, peer, LeaveReason::Left, None, detail);
                }
            }
            Command::Resume(resume) => self.resume(now, resume),
            Command::OpenLink(spec) => self.open_link(spec),
            Command::CloseLink { link } => self.close_link(now, link),
            Command::Relayed { link, message } => self.relayed(now, link, message),
            Command::Drain {
                move_sessions,
                grace,
                keep_running,
            } => self.drain(now, move_sessions, grace, keep_running),
            Command::CloseRoom { room } => {
                // Those in the room, and those who wait in its lobby.
                let mut peers = self.core.room_members(&room).to_vec();
                peers.extend(self.core.room_waiting(&room));
                for peer in peers {
                    let reason = Some(v1::CloseReason::RoomClosed);
                    self.close_session(now, peer, LeaveReason::Left, reason, "room closed");
                }
            }
        }
    }

    /// Resumes a session for the replica that presents its ticket, if the ticket is the
    /// session's current one; then tells the client where it stands: the roster, and the
    /// node's offer if one is waiting for an answer. Any other answer changes nothing, but one:
    /// a session whose media never connected is closed and answered as lost, so that the
    /// control plane opens a new one and the client negotiates afresh. (Resumed, it would wait
    /// for an offer or answer that was lost with the replica that carried it, until the
    /// connect timeout closed it half a minute later.)
    fn resume(&mut self, now: Instant, resume: Resume) {
        let session = self
            .by_session_id
            .get(&resume.session_id)
            .and_then(|peer| self.sessions.get_mut(peer));
        let (outcome, generation, peer) = match session {
            // This very node ended the session (the participant left, or it was replaced): a
            // ticket for it opens nothing. An earlier process lost it: the control plane
            // opens a new one.
            None if resume.node_instance == self.instance => (ResumeOutcome::Ended, 0, None),
            None => (ResumeOutcome::Lost, 0, None),
            // Each ticket resumes once: the first to come back with the current generation
            // takes the session, and every ticket sealed before is stale from then on.
            Some(session) if session.resume_generation != resume.generation => {
                (ResumeOutcome::Stale, 0, None)
            }
            Some(session) if !session.connected => (ResumeOutcome::Lost, 0, Some(session.id)),
            Some(session) => {
                session.resume_generation += 1;
                let generation = session.resume_generation;
                (ResumeOutcome::Resumed, generation, Some(session.id))
            }
        };
        if outcome != ResumeOutcome::Resumed {
            debug!(?outcome, "a resume was not accepted");
        }
        self.event(Event::ResumeAnswer {
            resume,
            outcome,
            generation,
        });
        let Some(peer) = peer else {
            return;
        };
        if outcome == ResumeOutcome::Lost {
            let detail = "resumed before its media connected: opened afresh";
            self.close_session(now, peer, LeaveReason::ConnectionLost, None, detail);
            return;
        }
        if let Some(welcome) = self.core.roster_for(peer) {
            self.signal(peer, signal::roster_with(welcome, true));
        }
        for notice in self.core.adrift_notices(peer) {
            self.signal(peer, signal::roster(notice));
        }
        let pending_offer = self.sessions.get(&peer).and_then(|session| {
            matches!(session.negotiation, Negotiation::OfferSent { .. })
                .then(|| session.pc.local_description().map(|d| d.sdp))
                .flatten()
        });
        if let Some(sdp) = pending_offer {
            self.signal(peer, super::offer_signal(sdp));
        }
    }

    /// Takes no new sessions from now on, and finishes once the rooms are empty or `grace` has
    /// passed (unless it `keep_running`; one drain without that ends it all the same).
    fn drain(&mut self, now: Instant, move_sessions: bool, grace: Duration, keep_running: bool) {
        let deadline = now + grace;
        let first = self.drain_deadline.is_none();
        self.drain_keeps_running = keep_running && (first || self.drain_keeps_running);
        if self
            .drain_deadline
            .is_some_and(|current| current <= deadline)
        {
            if self.sessions.is_empty() && !self.drain_keeps_running {
                self.finished = true;
            }
            return;
        }
        info!(move_sessions, grace_seconds = grace.as_secs(), "draining");
        self.drain_deadline = Some(deadline);
        self.event(Event::Draining {
            move_sessions,
            grace,
        });
        if self.sessions.is_empty() && !self.drain_keeps_running {
            self.finished = true;
        }
    }

    fn refuse(&mut self, session_id: &str, code: &str, message: &str) {
        self.event(Event::Signal {
            session_id: session_id.to_owned(),
            signal: v1::Signal::error(code, message),
        });
        self.event(Event::Closed {
            session_id: session_id.to_owned(),
            reason: v1::CloseReason::Refused,
            detail: message.to_owned(),
        });
    }

    fn open(&mut self, now: Instant, admission: Admission) {
        if self.by_session_id.contains_key(&admission.session_id) {
            return;
        }
        if self.drain_deadline.is_some() {
            let message = "this media node is draining";
            return self.refuse(&admission.session_id, "unavailable", message);
        }
        if self.sessions.len() >= self.max_participants as usize {
            let message = "this media node is full";
            return self.refuse(&admission.session_id, "platform-full", message);
        }
        // A lost session is continued once: its ticket, replayed, opens nothing more.
        if !admission.continues.is_empty() && self.continued.contains_key(&admission.continues) {
            let message = "the session was resumed already; join again";
            return self.refuse(&admission.session_id, "resume-refused", message);
        }
        // One session per participant in a room: a newer one (another tab, a resumed session,
        // a replayed ticket) ends the older, so that nobody is in a room twice.
        if let Some(older) = self
            .core
            .participant_in(&admission.room, &admission.participant_id)
        {
            let reason = Some(v1::CloseReason::Replaced);
            let detail = "the participant joined the room again";
            self.close_session(now, older, LeaveReason::Left, reason, detail);
        }
        self.next_peer += 1;
        let id = PeerId(self.next_peer);
        let session = match Session::new(
            id,
            admission.session_id.clone(),
            self.announced,
            self.announced_tcp,
            now,
        ) {
            Ok(session) => session,
            Err(error) => {
                warn!(%error, "could not create a connection");
                let message = "the media node failed";
                return self.refuse(&admission.session_id, "unavailable", message);
            }
        };
        let request = JoinRequest {
            room: admission.room,
            participant_id: admission.participant_id,
            display_name: admission.display_name,
            max_participants: admission.max_participants,
            last_n: admission.last_n,
            moderator: admission.moderator,
            lobby: admission.lobby,
            first_moderates: admission.first_moderates,
        };
        match self.core.join(id, request) {
            Ok(_) => {}
            Err(JoinError::RoomFull { .. }) => {
                return self.refuse(&admission.session_id, "room-full", "the room is full");
            }
            Err(JoinError::Locked) => {
                let message = "a moderator locked the room";
                return self.refuse(&admission.session_id, "room-locked", message);
            }
            Err(JoinError::LobbyFull) => {
                let message = "too many people wait to be let in";
                return self.refuse(&admission.session_id, "lobby-full", message);
            }
            Err(JoinError::AlreadyJoined) => return,
        }
        self.demux.add_peer(id, session.ufrag.clone());
        if !admission.continues.is_empty() {
            self.continued.insert(admission.continues, now);
        }
        debug!(session = %admission.session_id, peer = id.0, "session opened");
        self.by_session_id.insert(admission.session_id, id);
        self.sessions.insert(id, session);
        self.apply_core_outputs(now);
    }

    fn on_signal(&mut self, now: Instant, peer: PeerId, signal: v1::Signal) {
        let Some(kind) = signal.kind else {
            self.signal(peer, v1::Signal::error("bad-message", "empty signal"));
            return;
        };
        // Someone in the lobby may only leave (or say how they will come in) until they are
        // let in.
        if self.core.is_waiting(peer)
            && !matches!(kind, SignalKind::Leave(_) | SignalKind::MediaState(_))
        {
            let message = "wait until a moderator lets you in";
            self.signal(peer, v1::Signal::error("waiting", message));
            return;
        }
        match kind {
            SignalKind::Offer(offer) => self.on_offer(now, peer, offer),
            SignalKind::Answer(answer) => self.on_answer(now, peer, answer.sdp),
            // ICE-lite: the node learns the client's address from its connectivity checks and
            // needs no remote candidates.
            SignalKind::Candidate(_) => {}
            SignalKind::MediaState(state) => {
                self.core.set_media_state(
                    peer,
                    state.audio_muted,
                    state.video_muted,
                    state.screen_sharing,
                );
                self.apply_core_outputs(now);
            }
            SignalKind::Leave(_) => {
                let reason = Some(v1::CloseReason::Left);
                self.close_session(now, peer, LeaveReason::Left, reason, "left");
            }
            SignalKind::Viewports(viewports) => {
                for viewport in viewports.viewports.iter().take(MAX_VIEWPORTS) {
                    self.core
                        .set_viewport(peer, &viewport.stream_id, viewport.height);
                }
            }
            SignalKind::ReceiveSettings(settings) => {
                self.core.set_audio_only(peer, settings.audio_only);
            }
            SignalKind::Chat(message) => {
                if let Err(error) = self.core.chat(now, peer, &message.text) {
                    self.signal(peer, v1::Signal::error("chat", error.to_string()));
                }
                self.apply_core_outputs(now);
            }
            SignalKind::Moderate(moderate) => self.on_moderate(now, peer, &moderate),
            SignalKind::RaiseHand(hand) => {
                self.core.raise_hand(peer, hand.raised);
                self.apply_core_outputs(now);
            }
            SignalKind::Welcome(_)
            | SignalKind::Hands(_)
            | SignalKind::Role(_)
            | SignalKind::RoomState(_)
            | SignalKind::Lobby(_)
            | SignalKind::Knocking(_)
            | SignalKind::Request(_)
            | SignalKind::ParticipantJoined(_)
            | SignalKind::ParticipantsJoined(_)
            | SignalKind::ParticipantLeft(_)
            | SignalKind::Connection(_)
            | SignalKind::PublishLayers(_)
            | SignalKind::VideoState(_)
            | SignalKind::DominantSpeaker(_)
            | SignalKind::Error(_) => {
                let message = "clients cannot send this signal";
                self.signal(peer, v1::Signal::error("bad-message", message));
            }
        }
    }

    /// A moderator's action, carried out if `peer` moderates; anyone else is told so.
    fn on_moderate(&mut self, now: Instant, peer: PeerId, moderate: &v1::Moderate) {
        let action = v1::moderate::Action::try_from(moderate.action)
            .ok()
            .and_then(signal::action);
        let Some(action) = action else {
            let message = "unknown moderator action";
            self.signal(peer, v1::Signal::error("bad-message", message));
            return;
        };
        match self.core.moderate(peer, action, &moderate.participant_id) {
            Ok(()) => self.apply_core_outputs(now),
            Err(error) => {
                let code = match error {
                    ModerationError::NotModerator => "not-moderator",
                    ModerationError::NoSuchParticipant => "participant-not-found",
                };
                self.signal(peer, v1::Signal::error(code, error.to_string()));
            }
        }
    }

    /// The client's offer, for what it sends: answered, or refused with a clear error.
    fn on_offer(&mut self, now: Instant, peer: PeerId, offer: v1::SessionDescription) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        match session.answer_offer(now, offer.sdp, &offer.sources) {
            Ok(sdp) => {
                debug!(?peer, "the client's offer answered");
                let offered = session.offered_tracks();
                self.signal(
                    peer,
                    v1::Signal::new(SignalKind::Answer(v1::SessionDescription {
                        sdp,
                        ..Default::default()
                    })),
                );
                // The others negotiate the new tracks while this connection comes up: one
                // renegotiation each for the whole join, done before the first packet.
                for track in offered {
                    self.core.announce(now, peer, track);
                }
            }
            Err(error) => {
                debug!(%error, "client offer refused");
                let signal = v1::Signal::error(error_code(&error), error.to_string());
                self.signal(peer, signal);
            }
        }
        // Driving the connection carries out what the core decided, the announcements too.
        self.drive(now, peer);
    }

    /// The client's answer to the node's offer: the down-tracks in it start once connected.
    fn on_answer(&mut self, now: Instant, peer: PeerId, sdp: String) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        match session.apply_answer(now, sdp) {
            Ok(ready) => {
                debug!(
                    ?peer,
                    ready = ready.len(),
                    connected = session.connected,
                    "answer applied"
                );
                if session.connected {
                    for ssrc in ready {
                        self.core.down_track_ready(now, peer, ssrc);
                    }
                }
            }
            Err(error) => {
                debug!(%error, "client answer refused");
                let signal = v1::Signal::error(error_code(&error), error.to_string());
                self.signal(peer, signal);
            }
        }
        self.drive(now, peer);
        self.apply_core_outputs(now);
    }

    /// Ends a participant's session and frees everything that belonged to it. `report` tells
    /// the control plane, unless it asked for the close itself.
    pub(super) fn close_session(
        &mut self,
        now: Instant,
        peer: PeerId,
        reason: LeaveReason,
        report: Option<v1::CloseReason>,
        detail: &str,
    ) {
        let Some(mut session) = self.sessions.remove(&peer) else {
            return;
        };
        self.by_session_id.remove(&session.session_id);
        let addresses = self.demux.remove_peer(peer, &session.ufrag);
        self.drops.departed(now, addresses);
        match reason {
            // The page may be on its way back: the others keep it for a while (see the core's
            // `moving`).
            LeaveReason::ConnectionLost => self.core.lose(now, peer),
            LeaveReason::Left => self.core.leave(peer, reason),
        }
        if let Err(error) = session.pc.close() {
            debug!(%error, "closing a connection");
        }
        if reason == LeaveReason::ConnectionLost {
            info!(session = %session.session_id, detail, "a session's connection was lost");
        }
        if let Some(reason) = report {
            self.event(Event::Closed {
                session_id: session.session_id.clone(),
                reason,
                detail: detail.to_owned(),
            });
        }
        self.closing.push(session);
        self.apply_core_outputs(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::node::{Command, Node};

    fn drain(keep_running: bool) -> Command {
        Command::Drain {
            move_sessions: true,
            grace: Duration::from_secs(300),
            keep_running,
        }
    }

    #[test]
    fn a_node_drained_to_be_removed_stays_up_idle_until_told_to_end() {
        let now = Instant::now();
        let mut node = Node::new(now, "127.0.0.1:10000".parse().unwrap(), 10);
        node.command(now, drain(true));
        node.handle_timeout(now + Duration::from_secs(1));
        assert!(
            !node.is_finished(),
            "empty, but kept up for its pod's removal"
        );
        node.handle_timeout(now + Duration::from_secs(400));
        assert!(!node.is_finished(), "past its grace as well");
        // SIGTERM (the pod goes): a drain without keep_running ends it.
        node.command(now + Duration::from_secs(401), drain(false));
        assert!(node.is_finished());

        let mut plain = Node::new(now, "127.0.0.1:10000".parse().unwrap(), 10);
        plain.command(now, drain(false));
        assert!(
            plain.is_finished(),
            "an empty node drained as usual ends at once"
        );
    }
}

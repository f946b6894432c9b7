//! Sessions: which node carries each participant of this replica's gateway, and the way
//! signals travel between the participant's WebSocket and that node.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use treffpunkt_proto::v1::{self, ResumeOutcome, control_message::Kind as ControlKind};

use super::{ClientEvent, Fleet, FleetError, SessionRoute};
use crate::domain::{NodeId, RoomKey, TenantName};

/// How many events may wait for a slow client before its session is dropped. The node's stream
/// must never wait for one participant, but a client that keeps up still gets bursts as large
/// as its room: who joins a node that a large room has just spread to hears of everyone on the
/// room's other nodes one by one, as their roster arrives over the link (hundreds at once in a
/// room of a thousand). The queue takes those; it holds memory only for what waits in it.
pub(crate) const CLIENT_QUEUE: usize = 4096;
/// How long a resume waits for its node's answer.
const RESUME_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session could not be resumed here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The node that carries it is not attached (or takes nothing now).
    #[error("the session's media node is not available")]
    NodeUnavailable,
    /// The node has no such session: an earlier process of it lost the session.
    #[error("the session's media node lost it")]
    Lost,
    /// The session has ended, or the ticket was used already.
    #[error("the ticket resumes nothing")]
    Refused,
    /// The node did not answer in time.
    #[error("the session's media node did not answer")]
    NoAnswer,
}

/// A resume that waits for its node's answer, with the route the session takes if the node
/// accepts it.
#[derive(Debug)]
pub(super) struct PendingResume {
    session_id: String,
    route: SessionRoute,
    answer: oneshot::Sender<v1::ResumeAnswer>,
}

/// A session resumed through this replica: the client's events and the generation that its
/// next tickets carry.
#[derive(Debug)]
pub struct Resumed {
    /// What the node says to the client from now on.
    pub events: mpsc::Receiver<ClientEvent>,
    /// The session's resume generation now.
    pub generation: u64,
}

impl Fleet {
    /// Records that `session_id` runs on `node`; the first message for the node is sent after
    /// this, so that no answer to it is missed. It is refused when the node is full counting
    /// the sessions routed to it: of joins that raced for a node's last places, the later ones
    /// are placed again instead of refused by the node.
    fn route(
        &self,
        node: &NodeId,
        room: RoomKey,
        session_id: &str,
    ) -> Result<
        (
            mpsc::Receiver<ClientEvent>,
            mpsc::Sender<v1::ControlMessage>,
        ),
        FleetError,
    > {
        let (to_client, events) = mpsc::channel(CLIENT_QUEUE);
        let mut state = self.lock();
        let attached = state
            .nodes
            .get(node)
            .filter(|attached| attached.lost_since.is_none())
            .ok_or_else(|| FleetError::NodeGone(node.clone()))?;
        let max = attached.max_participants();
        if max > 0 && attached.participants(state.routed_to(node).count()) >= max {
            return Err(FleetError::Full(node.clone()));
        }
        let to_node = attached.to_node.clone();
        let route = SessionRoute {
            node: node.clone(),
            room,
            to_client,
        };
        state.sessions.insert(session_id.to_owned(), route);
        Ok((events, to_node))
    }

    async fn send_routed(
        &self,
        session_id: &str,
        node: &NodeId,
        to_node: mpsc::Sender<v1::ControlMessage>,
        message: v1::ControlMessage,
    ) -> Result<(), FleetError> {
        if to_node.send(message).await.is_err() {
            self.lock().sessions.remove(session_id);
            return Err(FleetError::NodeGone(node.clone()));
        }
        Ok(())
    }

    /// Routes a new session to `node` and asks the node to admit it. Events for the client
    /// arrive on the returned receiver.
    pub async fn open_session(
        &self,
        node: &NodeId,
        room: RoomKey,
        open: v1::OpenSession,
    ) -> Result<mpsc::Receiver<ClientEvent>, FleetError> {
        let session_id = open.session_id.clone();
        let message = v1::ControlMessage::new(ControlKind::OpenSession(open));
        let (events, to_node) = self.route(node, room, &session_id)?;
        self.send_routed(&session_id, node, to_node, message)
            .await?;
        Ok(events)
    }

    /// Asks `node` to hand the session `session_id` to this replica, with the client's ticket
    /// (its node instance and generation). Only when the node accepts does the session's route
    /// move here (and whoever held it is told); a refused or stale ticket changes nothing.
    pub async fn resume_session(
        &self,
        node: &NodeId,
        room: RoomKey,
        session_id: &str,
        (node_instance, generation): (&str, u64),
    ) -> Result<Resumed, ResumeError> {
        let (to_client, events) = mpsc::channel(CLIENT_QUEUE);
        let (answer, mut answered) = oneshot::channel();
        let (to_node, request_id) = {
            let mut state = self.lock();
            let to_node = state
                .nodes
                .get(node)
                .filter(|attached| attached.takes_rooms())
                .map(|attached| attached.to_node.clone())
                .ok_or(ResumeError::NodeUnavailable)?;
            state.next_request += 1;
            let request_id = state.next_request;
            let route = SessionRoute {
                node: node.clone(),
                room,
                to_client,
            };
            let session_id = session_id.to_owned();
            let pending = PendingResume {
                session_id,
                route,
                answer,
            };
            state.pending_resumes.insert(request_id, pending);
            (to_node, request_id)
        };
        let message = v1::ControlMessage::new(ControlKind::ResumeSession(v1::ResumeSession {
            session_id: session_id.to_owned(),
            node_instance: node_instance.to_owned(),
            generation,
            request_id,
        }));
        if to_node.send(message).await.is_err() {
            self.lock().pending_resumes.remove(&request_id);
            return Err(ResumeError::NodeUnavailable);
        }
        let answer = match tokio::time::timeout(RESUME_ANSWER_TIMEOUT, &mut answered).await {
            Ok(answer) => answer.map_err(|_| ResumeError::NodeUnavailable)?,
            Err(_) => {
                if self.lock().pending_resumes.remove(&request_id).is_some() {
                    return Err(ResumeError::NoAnswer);
                }
                // The answer came just now.
                answered.await.map_err(|_| ResumeError::NodeUnavailable)?
            }
        };
        match answer.outcome() {
            ResumeOutcome::Resumed => Ok(Resumed {
                events,
                generation: answer.generation,
            }),
            ResumeOutcome::Lost => Err(ResumeError::Lost),
            ResumeOutcome::Ended | ResumeOutcome::Stale | ResumeOutcome::Unspecified => {
                Err(ResumeError::Refused)
            }
        }
    }

    /// Takes `node`'s answer to a resume: an accepted one moves the session's route here
    /// before any later signal of the node is delivered, and the replica or connection that
    /// held it is told. Answers to nothing asked, or from another node, are ignored.
    pub(crate) fn answer_resume(&self, node: &NodeId, answer: v1::ResumeAnswer) {
        let mut state = self.lock();
        let asked = state
            .pending_resumes
            .get(&answer.request_id)
            .is_some_and(|p| &p.route.node == node && p.session_id == answer.session_id);
        let Some(pending) = asked
            .then(|| state.pending_resumes.remove(&answer.request_id))
            .flatten()
        else {
            return;
        };
        if answer.outcome() == ResumeOutcome::Resumed
            && let Some(previous) = state.sessions.insert(pending.session_id, pending.route)
        {
            let _ = previous.to_client.try_send(ClientEvent::Replaced);
        }
        let _ = pending.answer.send(answer);
    }

    /// Relays a client's signal to the node that carries its session.
    pub async fn signal(&self, session_id: &str, signal: v1::Signal) -> Result<(), FleetError> {
        let to_node = self.route_to_node(session_id)?;
        let message = v1::ControlMessage::new(ControlKind::Signal(v1::SessionSignal {
            session_id: session_id.to_owned(),
            signal: Some(signal),
        }));
        to_node
            .send(message)
            .await
            .map_err(|_| FleetError::UnknownSession)
    }

    /// Ends a session from the client's side: forgets its route and tells its node.
    pub async fn close_session(&self, session_id: &str, reason: v1::CloseReason) {
        let Some(route) = self.lock().sessions.remove(session_id) else {
            return;
        };
        self.close_on(&route.node, session_id, reason).await;
    }

    /// Asks `node`, if attached, to close `session_id`, whose route this replica may not
    /// know (it was opened through another replica).
    pub async fn close_on(&self, node: &NodeId, session_id: &str, reason: v1::CloseReason) {
        let to_node = self.lock().nodes.get(node).map(|n| n.to_node.clone());
        if let Some(to_node) = to_node {
            let close = v1::CloseSession {
                session_id: session_id.to_owned(),
                reason: reason as i32,
            };
            // The node may be gone already; then there is nothing left to close.
            let _ = to_node
                .send(v1::ControlMessage::new(ControlKind::CloseSession(close)))
                .await;
        }
    }

    /// Forgets a session's route without telling its node: the session lives on there (its
    /// client may resume it through any replica).
    pub fn forget_session(&self, session_id: &str) {
        self.lock().sessions.remove(session_id);
    }

    fn route_to_node(
        &self,
        session_id: &str,
    ) -> Result<mpsc::Sender<v1::ControlMessage>, FleetError> {
        let state = self.lock();
        let route = state
            .sessions
            .get(session_id)
            .ok_or(FleetError::UnknownSession)?;
        state
            .nodes
            .get(&route.node)
            .map(|node| node.to_node.clone())
            .ok_or_else(|| FleetError::NodeGone(route.node.clone()))
    }

    /// Participants in `room` whose sessions run through this replica.
    pub fn presence(&self, room: &RoomKey) -> u32 {
        self.lock()
            .sessions
            .values()
            .filter(|session| &session.room == room)
            .count() as u32
    }

    /// Participants in `tenant`'s rooms: the more of those whose sessions run through this
    /// replica and those the nodes last reported over all replicas.
    pub fn tenant_presence(&self, tenant: &TenantName) -> u32 {
        let routed = self
            .lock()
            .sessions
            .values()
            .filter(|session| &session.room.tenant == tenant)
            .count() as u32;
        routed.max(self.tenant_usage(tenant).0)
    }

    /// Rooms with at least one session through this replica.
    pub fn occupied_rooms(&self) -> Vec<RoomKey> {
        let mut rooms: Vec<RoomKey> = self
            .lock()
            .sessions
            .values()
            .map(|session| session.room.clone())
            .collect();
        rooms.sort();
        rooms.dedup();
        rooms
    }

    /// Hands a node's signal to the session's client. A client that does not keep up loses
    /// its session rather than holding up the node's stream: then this returns `false` and the
    /// caller closes the session on the node.
    pub(super) fn deliver(&self, node: &NodeId, session_id: &str, event: ClientEvent) -> bool {
        let mut state = self.lock();
        let Some(route) = state.sessions.get(session_id) else {
            return true;
        };
        if &route.node != node {
            // Only the node that carries a session may speak for it.
            return true;
        }
        let closing = matches!(event, ClientEvent::Closed(_));
        let delivered = route.to_client.try_send(event).is_ok();
        if closing || !delivered {
            state.sessions.remove(session_id);
        }
        delivered
    }
}

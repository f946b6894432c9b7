//! The fleet: media nodes attached to this control-plane replica, and the sessions routed to
//! them.
//!
//! Nodes dial in over gRPC ([`attach`]) and stay attached; the [`Fleet`] keeps, per node, the
//! channel to its stream and what it last reported, and, per session, which node carries it and
//! where that participant's WebSocket listens. The gateway asks the fleet to open sessions and
//! relay signals; the attach stream hands what nodes say back to the sessions.

pub mod attach;

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;
use treffpunkt_proto::v1::{self, control_message::Kind as ControlKind};

use crate::domain::{NodeId, NodeView, RoomKey};

/// How many events may wait for a slow client before its session is dropped. The node's stream
/// must never wait for one participant.
const CLIENT_QUEUE: usize = 256;

/// What the fleet tells a session's WebSocket task.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A signal from the node for this client.
    Signal(v1::Signal),
    /// The session ended on the node side.
    Closed(v1::CloseReason),
}

/// Why the fleet could not do what the gateway asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The node is not (or no longer) attached.
    #[error("media node {0} is not attached")]
    NodeGone(NodeId),
    /// The session is not known.
    #[error("unknown session")]
    UnknownSession,
}

/// One attached node.
#[derive(Debug)]
struct AttachedNode {
    /// Distinguishes this attachment from an earlier one of the same node id.
    attachment: u64,
    register: v1::Register,
    load: v1::LoadReport,
    draining: bool,
    to_node: mpsc::Sender<v1::ControlMessage>,
}

#[derive(Debug)]
struct SessionRoute {
    node: NodeId,
    room: RoomKey,
    to_client: mpsc::Sender<ClientEvent>,
}

#[derive(Debug, Default)]
struct FleetState {
    nodes: HashMap<NodeId, AttachedNode>,
    sessions: HashMap<String, SessionRoute>,
    next_attachment: u64,
}

/// The registry of attached nodes and the routing table of sessions.
#[derive(Debug, Default)]
pub struct Fleet {
    state: Mutex<FleetState>,
}

impl Fleet {
    fn lock(&self) -> std::sync::MutexGuard<'_, FleetState> {
        // Every critical section is a few map operations that cannot leave the state half
        // written, so a poisoned lock still guards consistent data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Placement's view of every attached node. Sessions admitted but not yet reported by the
    /// node count too, so that a burst of joins does not pile onto one node.
    pub fn nodes(&self) -> Vec<NodeView> {
        let state = self.lock();
        state
            .nodes
            .iter()
            .map(|(id, node)| {
                let routed = state
                    .sessions
                    .values()
                    .filter(|session| &session.node == id)
                    .count() as u32;
                NodeView {
                    id: id.clone(),
                    participants: node.load.participants.max(routed),
                    max_participants: node
                        .register
                        .capacity
                        .map_or(0, |capacity| capacity.max_participants),
                    draining: node.draining,
                }
            })
            .collect()
    }

    /// What `node` last reported of its load.
    pub fn load(&self, node: &NodeId) -> Option<v1::LoadReport> {
        self.lock().nodes.get(node).map(|attached| attached.load)
    }

    /// Whether `node` is attached and takes rooms.
    pub fn is_available(&self, node: &NodeId) -> bool {
        self.lock()
            .nodes
            .get(node)
            .is_some_and(|node| !node.draining)
    }

    /// Participants in `room` whose sessions run through this replica.
    pub fn presence(&self, room: &RoomKey) -> u32 {
        self.lock()
            .sessions
            .values()
            .filter(|session| &session.room == room)
            .count() as u32
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

    /// Routes a new session to `node` and asks the node to admit it. Events for the client
    /// arrive on the returned receiver.
    pub async fn open_session(
        &self,
        node: &NodeId,
        room: RoomKey,
        open: v1::OpenSession,
    ) -> Result<mpsc::Receiver<ClientEvent>, FleetError> {
        let (to_client, events) = mpsc::channel(CLIENT_QUEUE);
        let to_node = {
            let mut state = self.lock();
            let to_node = state
                .nodes
                .get(node)
                .ok_or_else(|| FleetError::NodeGone(node.clone()))?
                .to_node
                .clone();
            state.sessions.insert(
                open.session_id.clone(),
                SessionRoute {
                    node: node.clone(),
                    room,
                    to_client,
                },
            );
            to_node
        };
        let session_id = open.session_id.clone();
        if to_node
            .send(v1::ControlMessage::new(ControlKind::OpenSession(open)))
            .await
            .is_err()
        {
            self.lock().sessions.remove(&session_id);
            return Err(FleetError::NodeGone(node.clone()));
        }
        Ok(events)
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
        let to_node = self
            .lock()
            .nodes
            .get(&route.node)
            .map(|n| n.to_node.clone());
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

    /// Records a node that registered; replaces an earlier attachment of the same id. Returns
    /// the attachment number that later calls name.
    fn attach(&self, register: v1::Register, to_node: mpsc::Sender<v1::ControlMessage>) -> u64 {
        let mut state = self.lock();
        state.next_attachment += 1;
        let attachment = state.next_attachment;
        let id = NodeId(register.node_id.clone());
        state.nodes.insert(
            id,
            AttachedNode {
                attachment,
                register,
                load: v1::LoadReport::default(),
                draining: false,
                to_node,
            },
        );
        attachment
    }

    /// Forgets a node whose stream ended, unless it has attached again since, and tells the
    /// clients of its sessions that their connection is lost.
    fn detach(&self, node: &NodeId, attachment: u64) {
        let orphaned: Vec<SessionRoute> = {
            let mut state = self.lock();
            if state
                .nodes
                .get(node)
                .is_none_or(|attached| attached.attachment != attachment)
            {
                return;
            }
            state.nodes.remove(node);
            let ids: Vec<String> = state
                .sessions
                .iter()
                .filter(|(_, route)| &route.node == node)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| state.sessions.remove(id))
                .collect()
        };
        for route in orphaned {
            let _ = route
                .to_client
                .try_send(ClientEvent::Closed(v1::CloseReason::ConnectionLost));
        }
    }

    fn update_load(&self, node: &NodeId, load: v1::LoadReport) {
        if let Some(attached) = self.lock().nodes.get_mut(node) {
            attached.load = load;
        }
    }

    fn mark_draining(&self, node: &NodeId) {
        if let Some(attached) = self.lock().nodes.get_mut(node) {
            attached.draining = true;
        }
    }

    /// Hands a node's signal to the session's client. A client that does not keep up loses
    /// its session rather than holding up the node's stream: then this returns `false` and the
    /// caller closes the session on the node.
    fn deliver(&self, node: &NodeId, session_id: &str, event: ClientEvent) -> bool {
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

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

use tokio::sync::{broadcast, mpsc};
use treffpunkt_proto::v1::{self, control_message::Kind as ControlKind};

use crate::domain::{NodeId, NodeView, RoomKey, RoomName, TenantName};

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
#[derive(Debug)]
pub struct Fleet {
    state: Mutex<FleetState>,
    /// Rooms whose participant count changed, as nodes report it.
    room_changes: broadcast::Sender<RoomKey>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            room_changes: broadcast::channel(1024).0,
        }
    }
}

/// A room as a node reports it, if its names are valid.
fn room_key(room: Option<&v1::RoomRef>) -> Option<RoomKey> {
    let room = room?;
    Some(RoomKey {
        tenant: TenantName::new(room.tenant.as_str()).ok()?,
        name: RoomName::new(room.name.as_str()).ok()?,
    })
}

/// Participants per room in a load report.
fn room_loads(load: &v1::LoadReport) -> HashMap<RoomKey, u32> {
    load.room_loads
        .iter()
        .filter_map(|room| Some((room_key(room.room.as_ref())?, room.participants)))
        .collect()
}

impl Fleet {
    /// Rooms whose participant count changes from now on.
    pub fn room_changes(&self) -> broadcast::Receiver<RoomKey> {
        self.room_changes.subscribe()
    }

    /// Participants in `room` over every attached node, as the nodes last reported.
    pub fn room_participants(&self, room: &RoomKey) -> u32 {
        self.lock()
            .nodes
            .values()
            .map(|node| {
                node.load
                    .room_loads
                    .iter()
                    .filter(|load| room_key(load.room.as_ref()).as_ref() == Some(room))
                    .map(|load| load.participants)
                    .sum::<u32>()
            })
            .sum()
    }

    /// Participants and occupied rooms of `tenant` over every attached node.
    pub fn tenant_usage(&self, tenant: &TenantName) -> (u32, u32) {
        let state = self.lock();
        let mut rooms: HashMap<RoomKey, u32> = HashMap::new();
        for node in state.nodes.values() {
            for (room, participants) in room_loads(&node.load) {
                if &room.tenant == tenant {
                    *rooms.entry(room).or_default() += participants;
                }
            }
        }
        let participants = rooms.values().sum();
        let active = rooms.values().filter(|p| **p > 0).count() as u32;
        (participants, active)
    }

    /// Asks every node that hosts `room` to close it; its participants are told.
    pub fn close_room(&self, room: &RoomKey) {
        let state = self.lock();
        for node in state.nodes.values() {
            if room_loads(&node.load).contains_key(room) {
                let close = v1::ControlMessage::new(ControlKind::CloseRoom(v1::CloseRoom {
                    room: Some(v1::RoomRef {
                        tenant: room.tenant.to_string(),
                        name: room.name.to_string(),
                    }),
                }));
                // A node that does not keep up hears of it again at the next reconciliation.
                let _ = node.to_node.try_send(close);
            }
        }
    }

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
        self.lock()
            .nodes
            .get(node)
            .map(|attached| attached.load.clone())
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
        let rooms_hosted: Vec<RoomKey>;
        let orphaned: Vec<SessionRoute> = {
            let mut state = self.lock();
            if state
                .nodes
                .get(node)
                .is_none_or(|attached| attached.attachment != attachment)
            {
                return;
            }
            let rooms = state
                .nodes
                .remove(node)
                .map(|attached| room_loads(&attached.load))
                .unwrap_or_default();
            rooms_hosted = rooms.into_keys().collect();
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
        for room in rooms_hosted {
            let _ = self.room_changes.send(room);
        }
    }

    fn update_load(&self, node: &NodeId, load: v1::LoadReport) {
        let changed: Vec<RoomKey> = {
            let mut state = self.lock();
            let Some(attached) = state.nodes.get_mut(node) else {
                return;
            };
            let before = room_loads(&attached.load);
            let after = room_loads(&load);
            attached.load = load;
            before
                .keys()
                .chain(after.keys())
                .filter(|room| before.get(room) != after.get(room))
                .cloned()
                .collect()
        };
        for room in changed {
            // Nobody listening (no reconciler on this replica) is fine.
            let _ = self.room_changes.send(room);
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

//! The fleet: media nodes attached to this control-plane replica, and the sessions routed to
//! them.
//!
//! Nodes dial in over gRPC ([`attach`]; in a cluster with mutual TLS, [`tls`]) and stay attached
//! to every replica; the [`Fleet`] keeps,
//! per node, the channel to its stream and what it last reported, and, per session of this
//! replica's gateway, which node carries it and where that participant's WebSocket listens
//! (`sessions`).
//!
//! A node whose stream breaks is not given up at once: it is marked lost and takes no rooms,
//! and only if it does not come back within [`NODE_LOSS_GRACE`] are its sessions told to move
//! (their gateway places the room again and the clients reconnect). A draining node that asks
//! for it has its sessions moved the same way.

pub mod attach;
mod links;
pub mod replicas;
mod sessions;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use treffpunkt_proto::v1::{self, control_message::Kind as ControlKind};

use crate::domain::{NodeId, NodeView, RoomKey, RoomName, TenantName};
pub use links::LINK_IDLE;
pub use replicas::Replicas;
pub use sessions::{ResumeError, Resumed};

/// How long a node whose stream broke may take to come back before its rooms are moved. A node
/// that lives dials again 100 ms after its stream ended (its first backoff), and is back within a
/// few round trips more; one that died leaves its participants without sound and picture until
/// this has passed (1.5 s before: of the 4-6 s a page on a killed node took to decode again in
/// the browser tests, the longest single part).
pub const NODE_LOSS_GRACE: Duration = Duration::from_millis(1000);
/// How long after a replica starts its nodes may still be on their way to it (they retry with
/// a backoff of up to 5 s).
const NEW_REPLICA: Duration = Duration::from_secs(30);

/// What the fleet tells a session's WebSocket task.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A signal from the node for this client.
    Signal(v1::Signal),
    /// The session ended on the node side.
    Closed(v1::CloseReason),
    /// The session's node is gone or draining: the session must move to another node.
    Move,
    /// Another connection resumed the session: it is that connection's now.
    Replaced,
}

/// What happens to nodes, for whoever acts on it beyond this replica (the operator marks a
/// draining pod so that scale-in removes it first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The node drains.
    Draining {
        /// Which node.
        node: NodeId,
        /// Its MediaPool (empty outside a cluster).
        pool: String,
    },
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
    /// A node with this id is attached and its stream is up: a second registration would
    /// take its place.
    #[error("media node {0} is attached already")]
    AlreadyAttached(NodeId),
    /// A node with this id attached from another pool, and may still come back: a node of one
    /// pool (a partner's, say) cannot take the place, and the sessions, of another pool's node.
    #[error("media node {node} belongs to pool {pool:?}")]
    OtherPool {
        /// The node id.
        node: NodeId,
        /// The pool it attached from.
        pool: String,
    },
    /// The node has as many participants as it takes, counting the sessions routed to it
    /// this moment: a join that raced others for its last places goes elsewhere.
    #[error("media node {0} is full")]
    Full(NodeId),
}

/// One attached node.
#[derive(Debug)]
struct AttachedNode {
    /// Distinguishes this attachment from an earlier one of the same node id.
    attachment: u64,
    register: v1::Register,
    load: v1::LoadReport,
    draining: bool,
    /// Set while the stream is down and the node may still come back.
    lost_since: Option<Instant>,
    to_node: mpsc::Sender<v1::ControlMessage>,
}

impl AttachedNode {
    fn takes_rooms(&self) -> bool {
        !self.draining && self.lost_since.is_none()
    }

    /// Its participants: what it last reported, or the `routed` sessions if more (those that
    /// joined since its report).
    fn participants(&self, routed: usize) -> u32 {
        self.load
            .participants
            .max(u32::try_from(routed).unwrap_or(u32::MAX))
    }

    /// The most participants it takes; 0 when it did not say.
    fn max_participants(&self) -> u32 {
        self.register
            .capacity
            .map_or(0, |capacity| capacity.max_participants)
    }
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
    /// Resumes that wait for their node's answer, by request id.
    pending_resumes: HashMap<u64, sessions::PendingResume>,
    next_request: u64,
    next_attachment: u64,
    /// The links between nodes of spanning rooms that this replica opened.
    links: links::OpenedLinks,
}

impl FleetState {
    /// The sessions routed to `node` through this replica.
    fn routed_to<'a>(&'a self, node: &'a NodeId) -> impl Iterator<Item = &'a SessionRoute> {
        self.sessions
            .values()
            .filter(move |session| &session.node == node)
    }

    /// Tells every session on `node` to move, unless it is in `keep`.
    fn move_sessions(&self, node: &NodeId, keep: &[String]) {
        for (id, route) in &self.sessions {
            if &route.node == node && !keep.contains(id) {
                // A full queue means a client that does not listen; it loses its session then.
                let _ = route.to_client.try_send(ClientEvent::Move);
            }
        }
    }

    /// Marks `node` draining (with `move_sessions`, its sessions are told to move); returns its
    /// pool the first time, when the drain is news.
    fn drain(&mut self, node: &NodeId, move_sessions: bool) -> Option<String> {
        let attached = self.nodes.get_mut(node)?;
        let first = !attached.draining;
        attached.draining = true;
        let pool = attached.register.pool.clone();
        if move_sessions {
            self.move_sessions(node, &[]);
        }
        first.then_some(pool)
    }
}

/// The registry of attached nodes and the routing table of sessions.
#[derive(Debug)]
pub struct Fleet {
    state: Mutex<FleetState>,
    /// Rooms whose participant count changed, as nodes report it.
    room_changes: broadcast::Sender<RoomKey>,
    node_events: broadcast::Sender<NodeEvent>,
    /// When this replica's fleet began: the nodes dial a new replica within seconds.
    started: Instant,
    /// This replica and its peers, as nodes learn of them.
    replicas: Replicas,
    /// The tenants each pool is reserved for, as the platform's MediaPools say.
    reservations: Option<Counted>,
}

/// The [`Reservations`] a fleet counts its nodes' reports by.
struct Counted(Reservations);

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reservations")
    }
}

/// The tenants whose rooms pool `pool`'s nodes may host, if the pool is reserved for some (a
/// partner's pool); `None` for a pool open to every tenant, or one nobody knows.
pub type Reservations = Arc<dyn Fn(&str) -> Option<Vec<TenantName>> + Send + Sync>;

impl Default for Fleet {
    /// The fleet of the only replica there is (standalone mode).
    fn default() -> Self {
        Self::of_replica("standalone")
    }
}

impl Fleet {
    /// The fleet of replica `id`, one of several.
    pub fn of_replica(id: &str) -> Self {
        Self {
            state: Mutex::default(),
            room_changes: broadcast::channel(1024).0,
            node_events: broadcast::channel(64).0,
            started: Instant::now(),
            replicas: Replicas::new(id),
            reservations: None,
        }
    }

    /// The same, counting a node's reports of rooms only for the tenants its pool is reserved
    /// for: a partner's node cannot make another tenant's rooms, or that tenant, look full.
    pub fn counting_reports_by(mut self, reservations: Reservations) -> Self {
        self.reservations = Some(Counted(reservations));
        self
    }

    /// The participants `node` reported in each room that counts (see
    /// [`Self::counting_reports_by`]).
    fn counted_loads(&self, node: &AttachedNode) -> HashMap<RoomKey, u32> {
        let mut loads = room_loads(&node.load);
        let reserved =
            (self.reservations.as_ref()).and_then(|counted| counted.0(&node.register.pool));
        if let Some(tenants) = reserved {
            loads.retain(|room, _| tenants.contains(&room.tenant));
        }
        loads
    }

    /// This replica and the others that serve now.
    pub fn replicas(&self) -> &Replicas {
        &self.replicas
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

/// What a node that registers is known to carry until its first load report: the sessions
/// of the rooms it hosts (after a control-plane restart, its whole load). Read as empty, a
/// draining node would count as drained and its pod be removed with its participants on it.
fn hosted_load(hosted: &[v1::HostedRoom]) -> v1::LoadReport {
    let room_loads: Vec<v1::RoomLoad> = hosted
        .iter()
        .filter(|room| !room.session_ids.is_empty())
        .map(|room| v1::RoomLoad {
            room: room.room.clone(),
            participants: room.session_ids.len() as u32,
        })
        .collect();
    v1::LoadReport {
        rooms: room_loads.len() as u32,
        participants: room_loads.iter().map(|room| room.participants).sum(),
        room_loads,
        ..v1::LoadReport::default()
    }
}

/// The participants a node reported in each room. No room counts more than the node's whole
/// report, so that a node's report cannot make a room or a tenant look full beyond what the
/// node says it carries (and sums of them cannot overflow).
fn room_loads(load: &v1::LoadReport) -> HashMap<RoomKey, u32> {
    load.room_loads
        .iter()
        .filter_map(|room| {
            let key = room_key(room.room.as_ref())?;
            Some((key, room.participants.min(load.participants)))
        })
        .collect()
}

impl Fleet {
    fn lock(&self) -> std::sync::MutexGuard<'_, FleetState> {
        // Every critical section is a few map operations that cannot leave the state half
        // written, so a poisoned lock still guards consistent data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rooms whose participant count changes from now on.
    pub fn room_changes(&self) -> broadcast::Receiver<RoomKey> {
        self.room_changes.subscribe()
    }

    /// What happens to nodes from now on.
    pub fn node_events(&self) -> broadcast::Receiver<NodeEvent> {
        self.node_events.subscribe()
    }

    /// Placement's view of every node that takes rooms. Sessions admitted but not yet reported
    /// by the node count too, so that a burst of joins does not pile onto one node.
    pub fn nodes(&self) -> Vec<NodeView> {
        let state = self.lock();
        state
            .nodes
            .iter()
            .filter(|(_, node)| node.lost_since.is_none())
            .map(|(id, node)| {
                let routed: Vec<&SessionRoute> = state.routed_to(id).collect();
                let mut routed_rooms: Vec<&RoomKey> = routed.iter().map(|s| &s.room).collect();
                routed_rooms.sort();
                routed_rooms.dedup();
                NodeView {
                    id: id.clone(),
                    pool: node.register.pool.clone(),
                    participants: node.participants(routed.len()),
                    rooms: node.load.rooms.max(routed_rooms.len() as u32),
                    max_participants: node.max_participants(),
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
            .is_some_and(AttachedNode::takes_rooms)
    }

    /// Whether `node` is attached and its stream alive, draining or not: a draining node keeps
    /// the sessions it has until they end (unless it moves them), so a room there still spans it.
    pub fn is_attached(&self, node: &NodeId) -> bool {
        self.lock()
            .nodes
            .get(node)
            .is_some_and(|attached| attached.lost_since.is_none())
    }

    /// Whether this replica began so recently that its nodes may still be dialling it.
    pub fn is_new(&self) -> bool {
        self.started.elapsed() < NEW_REPLICA
    }

    /// The instance of `node` attached now (new with every start of its process).
    pub fn instance_of(&self, node: &NodeId) -> Option<String> {
        self.lock()
            .nodes
            .get(node)
            .map(|attached| attached.register.instance_id.clone())
    }

    /// Participants in `room` over every attached node, as the nodes last reported.
    pub fn room_participants(&self, room: &RoomKey) -> u32 {
        self.lock()
            .nodes
            .values()
            .map(|node| self.counted_loads(node).get(room).copied().unwrap_or(0))
            .fold(0, u32::saturating_add)
    }

    /// Participants and occupied rooms of `tenant` over every attached node.
    pub fn tenant_usage(&self, tenant: &TenantName) -> (u32, u32) {
        let state = self.lock();
        let mut rooms: HashMap<RoomKey, u32> = HashMap::new();
        for node in state.nodes.values() {
            for (room, participants) in self.counted_loads(node) {
                if &room.tenant == tenant {
                    let entry = rooms.entry(room).or_default();
                    *entry = entry.saturating_add(participants);
                }
            }
        }
        let participants = rooms.values().copied().fold(0, u32::saturating_add);
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

    /// Asks `node` to drain; with `move_sessions`, its participants move to other nodes. With
    /// `keep_running` it stays up, idle, once empty (its pod is about to be removed).
    pub fn drain(
        &self,
        node: &NodeId,
        move_sessions: bool,
        grace: Duration,
        keep_running: bool,
    ) -> Result<(), FleetError> {
        let state = self.lock();
        let attached = state
            .nodes
            .get(node)
            .ok_or_else(|| FleetError::NodeGone(node.clone()))?;
        let drain = v1::ControlMessage::new(ControlKind::Drain(v1::Drain {
            move_sessions,
            grace_seconds: grace.as_secs() as u32,
            keep_running,
        }));
        attached
            .to_node
            .try_send(drain)
            .map_err(|_| FleetError::NodeGone(node.clone()))
    }

    /// Records a node that registered; replaces an earlier attachment of the same id. Sessions
    /// routed to it that it no longer hosts (it restarted) are told to move. Returns the
    /// attachment number that later calls name. The `Attach` service calls it for every
    /// stream; tests of the crate attach nodes this way without sockets.
    pub(crate) fn attach(
        &self,
        register: v1::Register,
        to_node: mpsc::Sender<v1::ControlMessage>,
    ) -> Result<u64, FleetError> {
        let mut state = self.lock();
        let id = NodeId(register.node_id.clone());
        // A node whose stream is up keeps its place: a second registration under its id (a
        // misconfigured node, or someone who means harm) is refused and changes nothing. A node
        // whose stream ended may come back, during the grace or after.
        if state
            .nodes
            .get(&id)
            .is_some_and(|attached| attached.lost_since.is_none() && !attached.to_node.is_closed())
        {
            return Err(FleetError::AlreadyAttached(id));
        }
        if let Some(known) = state.nodes.get(&id)
            && known.register.pool != register.pool
        {
            return Err(FleetError::OtherPool {
                node: id,
                pool: known.register.pool.clone(),
            });
        }
        state.next_attachment += 1;
        let attachment = state.next_attachment;
        let hosted: Vec<String> = register
            .hosted_rooms
            .iter()
            .flat_map(|room| room.session_ids.iter().cloned())
            .collect();
        state.move_sessions(&id, &hosted);
        // A node that comes back as a new instance has new links.
        state.close_links_of(&id);
        let load = hosted_load(&register.hosted_rooms);
        let draining = register.draining;
        state.nodes.insert(
            id.clone(),
            AttachedNode {
                attachment,
                register,
                load,
                draining: false,
                lost_since: None,
                to_node,
            },
        );
        // A node that drains already is draining here from the start (its `Draining` message,
        // which follows for older control planes, then changes nothing).
        let pool = draining.and_then(|draining| state.drain(&id, draining.move_sessions));
        drop(state);
        if let Some(pool) = pool {
            let _ = self
                .node_events
                .send(NodeEvent::Draining { node: id, pool });
        }
        Ok(attachment)
    }

    /// Marks a node whose stream ended as lost (unless it has attached again since); returns
    /// whether it was marked.
    fn lose(&self, node: &NodeId, attachment: u64) -> bool {
        let mut state = self.lock();
        match state.nodes.get_mut(node) {
            Some(attached) if attached.attachment == attachment => {
                attached.lost_since = Some(Instant::now());
                true
            }
            _ => false,
        }
    }

    /// Loses `node` and forgets it at once, as if its grace had passed (for tests).
    #[cfg(test)]
    pub(crate) fn lose_now(&self, node: &NodeId) {
        let attachment = self.lock().nodes.get(node).map(|n| n.attachment);
        if let Some(attachment) = attachment
            && self.lose(node, attachment)
        {
            self.expire(node, attachment);
        }
    }

    /// Forgets a lost node that did not come back, and moves its sessions.
    fn expire(&self, node: &NodeId, attachment: u64) {
        let rooms: Vec<RoomKey> = {
            let mut state = self.lock();
            let still_lost = state.nodes.get(node).is_some_and(|attached| {
                attached.attachment == attachment && attached.lost_since.is_some()
            });
            if !still_lost {
                return;
            }
            let rooms = state
                .nodes
                .remove(node)
                .map(|attached| room_loads(&attached.load).into_keys().collect())
                .unwrap_or_default();
            state.move_sessions(node, &[]);
            state.close_links_of(node);
            rooms
        };
        for room in rooms {
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
            let changed = before
                .keys()
                .chain(after.keys())
                .filter(|room| before.get(room) != after.get(room))
                .cloned()
                .collect();
            state.close_idle_links(Instant::now());
            changed
        };
        for room in changed {
            // Nobody listening (no reconciler on this replica) is fine.
            let _ = self.room_changes.send(room);
        }
    }

    pub(crate) fn mark_draining(&self, node: &NodeId, move_sessions: bool) {
        let pool = self.lock().drain(node, move_sessions);
        if let Some(pool) = pool {
            let _ = self.node_events.send(NodeEvent::Draining {
                node: node.clone(),
                pool,
            });
        }
    }
}

#[cfg(test)]
mod tests;

//! What the node tells about itself to its health endpoint: whether it is attached to the
//! control plane, whether it drains, and its rooms and participants. Written by the run loop and
//! the `Attach` client, read by [`crate::health`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// One link of a spanning room, as the status tells it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    /// The room; not told on the status endpoint, which anyone who reaches the health port
    /// may read (room names can say whose meeting it is).
    #[serde(skip_serializing)]
    pub room: String,
    /// The node at the other end.
    pub peer_node: String,
    /// Packets sent over it.
    pub packets_out: u64,
    /// Packets taken from it.
    pub packets_in: u64,
    /// Packets sent over it again because the other node missed them (part of `packets_out`).
    pub packets_resent: u64,
}

#[derive(Debug, Default)]
struct Inner {
    attached: AtomicBool,
    draining: AtomicBool,
    rooms: AtomicU32,
    participants: AtomicU32,
    links: Mutex<Vec<LinkStatus>>,
    metrics: crate::metrics::NodeMetrics,
}

/// What the node tells about itself; written by the run loop and the `Attach` client.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus(Arc<Inner>);

impl NodeStatus {
    /// A status whose metrics name the node ([`crate::metrics::NodeMetrics::of_node`]).
    pub fn of_node(node_id: &str) -> Self {
        Self(Arc::new(Inner {
            metrics: crate::metrics::NodeMetrics::of_node(node_id),
            ..Inner::default()
        }))
    }

    /// Records whether the node is attached to at least one control-plane replica.
    pub fn set_attached(&self, attached: bool) {
        self.0.attached.store(attached, Ordering::Relaxed);
    }

    /// Whether the node is attached now.
    pub fn attached(&self) -> bool {
        self.0.attached.load(Ordering::Relaxed)
    }

    /// Records that the node drains.
    pub fn set_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    /// Records the node's rooms and participants.
    pub fn set_load(&self, rooms: u32, participants: u32) {
        self.0.rooms.store(rooms, Ordering::Relaxed);
        self.0.participants.store(participants, Ordering::Relaxed);
    }

    /// Records the node's links to other nodes.
    pub fn set_links(&self, links: Vec<LinkStatus>) {
        *self.0.links.lock().unwrap_or_else(|e| e.into_inner()) = links;
    }

    /// The node's links to other nodes, as last recorded.
    pub fn links(&self) -> Vec<LinkStatus> {
        self.0
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &crate::metrics::NodeMetrics {
        &self.0.metrics
    }

    /// Whether the node drains.
    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// The node's rooms and participants, as last reported.
    pub fn load(&self) -> (u32, u32) {
        (
            self.0.rooms.load(Ordering::Relaxed),
            self.0.participants.load(Ordering::Relaxed),
        )
    }
}

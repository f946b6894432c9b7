//! Placement: which nodes host a room, recorded so that every gateway agrees.
//!
//! A room whose recorded nodes are attached stays there: a join goes to the first of them with
//! room to spare ([`domain::host_with_room`]). When there is none, the least-loaded node its
//! tenant may use is chosen ([`domain::choose_node`]), added to the room's nodes and written
//! with compare-and-set on its revision ([`Store::place_room`]). A draining node takes no
//! joins but stays one of the room's nodes while it is attached: one that keeps its sessions
//! until they end is linked with the node that takes the room's new joins, so the room does
//! not split in two. When another gateway
//! placed the room in between, the write fails with a conflict; the room is read again and, as
//! a rule, found on the other gateway's live node, which both then use.
//!
//! The load of a node is what the fleet knows of it, raised to the number of rooms the store
//! records on it: other gateways place rooms too, and their sessions do not run through this
//! replica. Those counts are read once per placement, and only when a node must be chosen.

use std::collections::HashMap;
use std::net::IpAddr;

use tracing::info;

use super::{Admission, Refusal, RefusalCode};
use crate::domain::{self, NodeId, PoolAccess, Room, Tenant};
use crate::store::{Store, StoreError};

/// Compare-and-set attempts before a placement gives up. Each conflict means another gateway
/// placed or changed the room; more than a few in a row means something keeps changing it.
const MAX_TRIES: usize = 10;

impl<S: Store> Admission<S> {
    /// The node that takes one more participant of `room` of `tenant`, and every node of the
    /// room after that. The first of the room's live nodes with room to spare takes it; when
    /// there is none, the least-loaded node its tenant may use is added to the room's nodes
    /// (the first, for a room not placed yet), recorded with compare-and-set so that racing
    /// gateways agree. A room whose every node is full and that can spread nowhere stays on
    /// its first node that takes rooms; opening the session there refuses what it cannot take
    /// (the fleet, counting the sessions routed to it, or else the node itself).
    pub(super) async fn place(
        &self,
        tenant: &Tenant,
        mut room: Room,
        from: Option<IpAddr>,
    ) -> Result<(NodeId, Vec<NodeId>), Refusal> {
        let pools = self.store.pools().await?;
        let near = |node: &domain::NodeView| domain::is_near(&node.pool, &pools, from);
        let mut recorded: Option<HashMap<NodeId, u32>> = None;
        for _ in 0..MAX_TRIES {
            // Draining nodes stay: their participants are still in the room.
            let live: Vec<NodeId> = room
                .nodes
                .iter()
                .filter(|node| self.fleet.is_attached(node))
                .cloned()
                .collect();
            if let Some(host) = domain::host_with_room(&live, &self.fleet.nodes(), near) {
                return Ok((host.id.clone(), live));
            }
            let recorded = match &mut recorded {
                Some(counts) => &*counts,
                slot @ None => {
                    // A failed count only makes the choice less informed; it never refuses.
                    let counts = self.store.rooms_per_node().await.unwrap_or_default();
                    &*slot.insert(counts)
                }
            };
            let chosen = match self.choose(tenant, &pools, recorded, &live, from) {
                Ok(chosen) => chosen,
                Err(refusal) => {
                    // A full node refuses what it cannot take with the node's own words.
                    return match live.iter().find(|node| self.fleet.is_available(node)) {
                        Some(first) => Ok((first.clone(), live)),
                        None => Err(refusal),
                    };
                }
            };
            // The nodes that take joins first, the draining ones last: the room's first node
            // (its status's `node`) is one that takes it on.
            let (mut nodes, draining): (Vec<NodeId>, Vec<NodeId>) = live
                .iter()
                .cloned()
                .partition(|node| self.fleet.is_available(node));
            nodes.push(chosen.clone());
            nodes.extend(draining);
            match self
                .store
                .place_room(&room.key, &room.revision, nodes.clone())
                .await
            {
                Ok(_) if live.is_empty() => {
                    info!(room = %room.key, node = %chosen, "room placed");
                    return Ok((chosen, nodes));
                }
                Ok(_) => {
                    info!(room = %room.key, node = %chosen, nodes = nodes.len(), "room spread to another node");
                    return Ok((chosen, nodes));
                }
                Err(StoreError::Conflict(_)) => {
                    self.metrics.placement_conflict();
                    room = self
                        .store
                        .room(&room.key)
                        .await?
                        .ok_or_else(|| Refusal::room_not_found("the room was removed"))?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(Refusal::new(
            RefusalCode::Unavailable,
            "could not place the room, try again",
        ))
    }

    /// Refuses with `platform-full` unless a node that `tenant` may use could take a new room
    /// now; asked before an ad-hoc room is created, so that a full platform creates nothing.
    pub(super) async fn check_capacity(&self, tenant: &Tenant) -> Result<(), Refusal> {
        let pools = self.store.pools().await?;
        // As in `place`: a failed count only makes the answer less informed.
        let recorded = self.store.rooms_per_node().await.unwrap_or_default();
        self.choose(tenant, &pools, &recorded, &[], None).map(drop)
    }

    /// The least-loaded attached node that `tenant` may use, counting `recorded` rooms, other
    /// than the room's own `hosts`: one of the tenant's own pools if one has room (a partner's
    /// rooms stay on the nodes it brought while they can), any it may use otherwise; in each,
    /// a node near the joiner's address `from` first.
    fn choose(
        &self,
        tenant: &Tenant,
        pools: &[PoolAccess],
        recorded: &HashMap<NodeId, u32>,
        hosts: &[NodeId],
        from: Option<IpAddr>,
    ) -> Result<NodeId, Refusal> {
        let mut nodes = self.fleet.nodes();
        for node in &mut nodes {
            let rooms = recorded.get(&node.id).copied().unwrap_or(0);
            node.rooms = node.rooms.max(rooms);
        }
        let usable = |node: &domain::NodeView| {
            !hosts.contains(&node.id) && domain::may_use(tenant, &node.pool, pools)
        };
        let own = |node: &domain::NodeView| domain::owns(tenant, &node.pool, pools);
        let near = |node: &domain::NodeView| domain::is_near(&node.pool, pools, from);
        domain::choose_node(&nodes, |node| usable(node) && own(node) && near(node))
            .or_else(|| domain::choose_node(&nodes, |node| usable(node) && own(node)))
            .or_else(|| domain::choose_node(&nodes, |node| usable(node) && near(node)))
            .or_else(|| domain::choose_node(&nodes, usable))
            .map(|node| node.id.clone())
            .ok_or_else(|| {
                Refusal::new(
                    RefusalCode::PlatformFull,
                    "the platform is full, try again later",
                )
            })
    }
}

//! Where the control plane keeps tenants and rooms.
//!
//! The gateway talks to a [`Store`]; in a cluster it is backed by the Kubernetes API server
//! (Tenant and Room objects, [`KubeStore`]), in standalone mode by [`MemoryStore`]. Placement is written with
//! compare-and-set on the room's revision, so that two gateways racing to place one room agree
//! on one node.

mod kube;
mod memory;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

pub use self::kube::{GATEWAY_MANAGER, KubeStore};
pub use memory::MemoryStore;

use crate::domain::{NodeId, PoolAccess, Revision, Room, RoomKey, Tenant, TenantName};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The room exists already.
    #[error("room {0} exists already")]
    AlreadyExists(RoomKey),
    /// The room does not exist.
    #[error("room {0} does not exist")]
    NotFound(RoomKey),
    /// Someone else changed the room since it was read.
    #[error("room {0} was changed concurrently")]
    Conflict(RoomKey),
    /// The tenant may have no more rooms.
    #[error("the tenant {0} has as many rooms as it may")]
    RoomLimit(TenantName),
    /// The backing service failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The control plane's view of tenants and rooms.
pub trait Store: Send + Sync + 'static {
    /// The tenant called `name`, if any.
    fn tenant(
        &self,
        name: &TenantName,
    ) -> impl Future<Output = Result<Option<Tenant>, StoreError>> + Send;

    /// The room `key`, if any.
    fn room(&self, key: &RoomKey) -> impl Future<Output = Result<Option<Room>, StoreError>> + Send;

    /// Creates `room`; fails if it exists or the tenant's room limit is reached.
    fn create_room(&self, room: Room) -> impl Future<Output = Result<Room, StoreError>> + Send;

    /// Records that `nodes` host the room (nobody, when empty), if the room is still at
    /// `revision`. Returns the room as written.
    fn place_room(
        &self,
        key: &RoomKey,
        revision: &Revision,
        nodes: Vec<NodeId>,
    ) -> impl Future<Output = Result<Room, StoreError>> + Send;

    /// Removes the room if it is still at `revision`.
    fn delete_room(
        &self,
        key: &RoomKey,
        revision: &Revision,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every room.
    fn rooms(&self) -> impl Future<Output = Result<Vec<Room>, StoreError>> + Send;

    /// How many rooms `tenant` has, persistent and ad hoc. Admission compares it with the
    /// tenant's room limit before it creates a room, so that a join refused for the limit
    /// creates nothing; [`Store::create_room`] still enforces the limit itself, since a count
    /// may lag a room another gateway created a moment ago.
    fn count_rooms(
        &self,
        tenant: &TenantName,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// How many rooms are recorded on each node (nodes without rooms are absent). Placement
    /// counts them beside what the fleet knows, since other gateways place rooms too; it is
    /// answered from what the store holds, without copying every room.
    fn rooms_per_node(
        &self,
    ) -> impl Future<Output = Result<HashMap<NodeId, u32>, StoreError>> + Send;

    /// Which tenants each MediaPool serves.
    fn pools(&self) -> impl Future<Output = Result<Vec<PoolAccess>, StoreError>> + Send;

    /// The value under `key` of Secret `name` in `tenant`'s namespace (a room's password, the
    /// tenant's signing key), if there is one. Read when a protected room is joined, never kept.
    fn secret(
        &self,
        tenant: &TenantName,
        name: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
}

/// A Secret of a tenant's namespace, as standalone mode's manifests give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSecret {
    /// The tenant whose namespace holds it.
    pub tenant: TenantName,
    /// Its name.
    pub name: String,
    /// Its keys and values.
    pub data: BTreeMap<String, Vec<u8>>,
}

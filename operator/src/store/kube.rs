//! The store of a cluster: Tenant and Room objects on the Kubernetes API server.
//!
//! Tenants are read from a watch-fed cache (they change rarely and every join needs one).
//! Rooms are read from the API server directly when one is needed for a join, so that a room
//! just created or placed by another gateway is seen at once. Placement is a merge patch of the
//! Room's status that carries the resourceVersion the gateway read: the API server refuses it
//! with 409 Conflict when another gateway placed the room first, and both agree on one node.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store as Cache};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::{Store, StoreError};
use crate::crd::{
    self, Lifetime, MediaPool, Room as RoomObject, RoomSpec, RoomStatus, Tenant as TenantObject,
};
use crate::domain::{
    NodeId, PoolAccess, Revision, Room, RoomKey, RoomLifetime, Tenant, TenantName,
};

/// The field manager the gateway writes under.
pub const GATEWAY_MANAGER: &str = "treffpunkt-gateway";

/// Tenants and rooms on the API server.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    tenants: Cache<TenantObject>,
    rooms: Cache<RoomObject>,
    pools: Cache<MediaPool>,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeStore")
    }
}

fn unavailable(error: kube::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl KubeStore {
    /// A store on `client`, reading from the replica's `watches`.
    pub fn new(client: Client, watches: &crate::watches::Watches) -> Self {
        Self {
            client,
            tenants: watches.tenants.store(),
            rooms: watches.rooms.store(),
            pools: watches.pools.store(),
        }
    }

    /// The tenants each MediaPool is reserved for, read from the cache as the fleet counts
    /// its nodes' reports ([`crate::fleet::Fleet::counting_reports_by`]).
    pub fn reservations(&self) -> crate::fleet::Reservations {
        let pools = self.pools.clone();
        Arc::new(move |name| {
            let pool = pools.find(|pool| pool.name_any() == name)?;
            Some(reserved_for(&pool)).filter(|tenants| !tenants.is_empty())
        })
    }

    /// The cached Tenant objects.
    pub fn tenant_objects(&self) -> Vec<Arc<TenantObject>> {
        self.tenants.state()
    }

    /// The cached Room objects.
    pub fn room_objects(&self) -> Vec<Arc<RoomObject>> {
        self.rooms.state()
    }

    fn rooms_of(&self, key: &RoomKey) -> Api<RoomObject> {
        Api::namespaced(
            self.client.clone(),
            &crd::tenant_namespace(key.tenant.as_str()),
        )
    }

    fn domain_room(object: &RoomObject) -> Result<Room, StoreError> {
        object
            .to_domain()
            .ok_or_else(|| StoreError::Unavailable("a room outside any tenant".into()))
    }
}

impl Store for KubeStore {
    /// A tenant has rooms to join only once the operator reports its namespace as its own:
    /// the gateway must neither make nor place rooms in a namespace that is someone else's,
    /// nor in one whose owner the operator has not yet checked.
    async fn tenant(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError> {
        Ok(self
            .tenants
            .get(&ObjectRef::new(name.as_str()))
            .filter(|tenant| tenant.owns_namespace(&crd::tenant_namespace(name.as_str())))
            .and_then(|tenant| tenant.to_domain()))
    }

    async fn room(&self, key: &RoomKey) -> Result<Option<Room>, StoreError> {
        let object = self
            .rooms_of(key)
            .get_opt(key.name.as_str())
            .await
            .map_err(unavailable)?;
        object.as_ref().map(Self::domain_room).transpose()
    }

    async fn create_room(&self, room: Room) -> Result<Room, StoreError> {
        let mut object = RoomObject::new(
            room.key.name.as_str(),
            RoomSpec {
                display_name: room.display_name.clone(),
                access: None,
                password_secret_ref: None,
                moderator_password_secret_ref: None,
                max_participants: room.max_participants.and_then(|m| i32::try_from(m).ok()),
                video_last_n: room.video_last_n.and_then(|n| i32::try_from(n).ok()),
                lifetime: match room.lifetime {
                    RoomLifetime::Persistent => Lifetime::Persistent,
                    RoomLifetime::AdHoc => Lifetime::AdHoc,
                },
            },
        );
        object.labels_mut().insert(
            "app.kubernetes.io/managed-by".into(),
            GATEWAY_MANAGER.into(),
        );
        let params = PostParams {
            field_manager: Some(GATEWAY_MANAGER.into()),
            ..PostParams::default()
        };
        match self.rooms_of(&room.key).create(&params, &object).await {
            Ok(created) => Self::domain_room(&created),
            Err(kube::Error::Api(status)) if status.is_already_exists() || status.code == 409 => {
                Err(StoreError::AlreadyExists(room.key))
            }
            Err(kube::Error::Api(status))
                if status.is_forbidden() && status.message.contains("quota") =>
            {
                Err(StoreError::RoomLimit(room.key.tenant))
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                Err(StoreError::NotFound(room.key))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn place_room(
        &self,
        key: &RoomKey,
        revision: &Revision,
        nodes: Vec<NodeId>,
    ) -> Result<Room, StoreError> {
        let nodes: Vec<String> = nodes.into_iter().map(|node| node.0).collect();
        let body = json!({
            "metadata": { "resourceVersion": revision.0 },
            "status": { "node": nodes.first(), "nodes": nodes },
        });
        let params = PatchParams {
            field_manager: Some(GATEWAY_MANAGER.into()),
            ..PatchParams::default()
        };
        match self
            .rooms_of(key)
            .patch_status(key.name.as_str(), &params, &Patch::Merge(&body))
            .await
        {
            Ok(room) => Self::domain_room(&room),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.code == 409 => {
                Err(StoreError::Conflict(key.clone()))
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                Err(StoreError::NotFound(key.clone()))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn delete_room(&self, key: &RoomKey, revision: &Revision) -> Result<(), StoreError> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(revision.0.clone()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.rooms_of(key).delete(key.name.as_str(), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_conflict() || status.code == 409 => {
                Err(StoreError::Conflict(key.clone()))
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                Err(StoreError::NotFound(key.clone()))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn secret(
        &self,
        tenant: &TenantName,
        name: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let namespace = crd::tenant_namespace(tenant.as_str());
        let secret = Api::<Secret>::namespaced(self.client.clone(), &namespace)
            .get_opt(name)
            .await
            .map_err(unavailable)?;
        Ok(secret
            .and_then(|secret| secret.data)
            .and_then(|mut data| data.remove(key))
            .map(|value| value.0))
    }

    async fn pools(&self) -> Result<Vec<PoolAccess>, StoreError> {
        Ok(self
            .pools
            .state()
            .iter()
            .map(|pool| PoolAccess {
                pool: pool.name_any(),
                tenants: reserved_for(pool),
                // The schema admits only CIDR-shaped entries; one that still does not parse
                // (a prefix too long for its address) names nobody.
                near: pool
                    .spec
                    .client_networks
                    .iter()
                    .filter_map(|net| net.parse().ok())
                    .collect(),
            })
            .collect())
    }

    async fn rooms(&self) -> Result<Vec<Room>, StoreError> {
        Ok(self
            .rooms
            .state()
            .iter()
            .filter_map(|room| room.to_domain())
            .collect())
    }

    /// From the watch-fed cache: a room another gateway created a moment ago may be missing,
    /// which the tenant's ResourceQuota, enforced by the API server on create, makes harmless.
    async fn count_rooms(&self, tenant: &TenantName) -> Result<u32, StoreError> {
        let count = self
            .rooms
            .state()
            .iter()
            .filter(|room| room.key().is_some_and(|key| &key.tenant == tenant))
            .count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// From the watch-fed cache: a count may lag a placement by another gateway for a moment,
    /// which the compare-and-set of the placement itself makes harmless.
    async fn rooms_per_node(&self) -> Result<HashMap<NodeId, u32>, StoreError> {
        let mut counts: HashMap<NodeId, u32> = HashMap::new();
        for room in self.rooms.state() {
            // The same rooms as `rooms` sees: those in a tenant's namespace.
            if room.key().is_none() {
                continue;
            }
            for node in room
                .status
                .as_ref()
                .map(RoomStatus::hosts)
                .unwrap_or_default()
            {
                *counts.entry(NodeId(node)).or_default() += 1;
            }
        }
        Ok(counts)
    }
}

/// The tenants `pool` is reserved for (empty: every tenant).
fn reserved_for(pool: &MediaPool) -> Vec<TenantName> {
    pool.spec
        .tenants
        .iter()
        .filter_map(|t| TenantName::new(t.as_str()).ok())
        .collect()
}

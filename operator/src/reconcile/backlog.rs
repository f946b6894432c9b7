//! The reconcilers' backlog: how many objects of each kind carry a spec newer than what their
//! status says was reconciled (`metadata.generation` beyond `status.observedGeneration`), or
//! were never reconciled at all. That is every change waiting for the leader's reconcilers,
//! and every object whose reconciliation keeps failing.
//!
//! Every replica counts from its own cache (no request to the API server), so followers show
//! the same figure as the leader, and a platform without a leader shows its backlog growing.
//! MediaPools outside the platform namespace, which no reconciler takes, are not counted. Rooms
//! in a namespace their tenant does not own stay counted: nothing reconciles them until the
//! namespace is the tenant's (the Tenant's `Ready` condition says why).

use std::sync::Arc;
use std::time::Duration;

use kube::Resource;

use crate::crd::{MediaPool, Room, Tenant};
use crate::metrics::Metrics;
use crate::watches::Watches;

/// How often the backlog is counted.
const INTERVAL: Duration = Duration::from_secs(5);

/// Counts the backlog into `metrics` every few seconds, until aborted.
pub async fn count(watches: Arc<Watches>, platform_namespace: String, metrics: Metrics) {
    loop {
        let tenants = watches.tenants.store().state();
        let rooms = watches.rooms.store().state();
        let pools = watches.pools.store().state();
        let counted = Backlog::of(&tenants, &rooms, &pools, &platform_namespace);
        metrics.set_backlog("tenant", counted.tenants);
        metrics.set_backlog("room", counted.rooms);
        metrics.set_backlog("mediapool", counted.pools);
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Objects waiting for their reconciler, by kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Tenants.
    pub tenants: usize,
    /// Rooms.
    pub rooms: usize,
    /// MediaPools of the platform namespace.
    pub pools: usize,
}

impl Backlog {
    /// Counts the backlog among the objects given.
    pub fn of(
        tenants: &[Arc<Tenant>],
        rooms: &[Arc<Room>],
        pools: &[Arc<MediaPool>],
        platform_namespace: &str,
    ) -> Self {
        let platform = Some(platform_namespace);
        Self {
            tenants: waiting(tenants.iter(), |t| t.status.as_ref()?.observed_generation),
            rooms: waiting(rooms.iter(), |r| r.status.as_ref()?.observed_generation),
            pools: waiting(
                pools
                    .iter()
                    .filter(|pool| pool.metadata.namespace.as_deref() == platform),
                |p| p.status.as_ref()?.observed_generation,
            ),
        }
    }
}

/// How many of `objects` carry a generation beyond the one their status records (`observed`),
/// or record none.
fn waiting<'a, K: Resource + 'a>(
    objects: impl Iterator<Item = &'a Arc<K>>,
    observed: impl Fn(&K) -> Option<i64>,
) -> usize {
    objects
        .filter(|object| {
            let generation = object.meta().generation;
            generation.is_some_and(|generation| {
                observed(object).is_none_or(|observed| observed < generation)
            })
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MediaPoolStatus, RoomStatus, TenantSpec, TenantStatus};

    fn tenant(name: &str, generation: i64, observed: Option<i64>) -> Arc<Tenant> {
        let spec: TenantSpec =
            serde_json::from_value(serde_json::json!({"displayName": "Chor"})).unwrap();
        let mut tenant = Tenant::new(name, spec);
        tenant.metadata.generation = Some(generation);
        tenant.status = observed.map(|observed| TenantStatus {
            observed_generation: Some(observed),
            ..TenantStatus::default()
        });
        Arc::new(tenant)
    }

    fn room(namespace: &str, generation: i64, observed: Option<i64>) -> Arc<Room> {
        let mut room: Room = serde_json::from_value(serde_json::json!({
            "apiVersion": "treffpunkt.io/v1alpha1",
            "kind": "Room",
            "metadata": {"name": "raum", "namespace": namespace, "generation": generation},
            "spec": {},
        }))
        .unwrap();
        room.status = observed.map(|observed| RoomStatus {
            observed_generation: Some(observed),
            ..RoomStatus::default()
        });
        Arc::new(room)
    }

    fn pool(namespace: &str, generation: i64, observed: Option<i64>) -> Arc<MediaPool> {
        let mut pool: MediaPool = serde_json::from_value(serde_json::json!({
            "apiVersion": "treffpunkt.io/v1alpha1",
            "kind": "MediaPool",
            "metadata": {"name": "standard", "namespace": namespace, "generation": generation},
            "spec": {"replicas": {"min": 1, "max": 2}},
        }))
        .unwrap();
        pool.status = observed.map(|observed| MediaPoolStatus {
            observed_generation: Some(observed),
            ..MediaPoolStatus::default()
        });
        Arc::new(pool)
    }

    #[test]
    fn objects_whose_latest_spec_was_not_reconciled_are_counted() {
        let tenants = [
            tenant("chor", 2, Some(2)),
            tenant("verein", 3, Some(2)),
            tenant("neu", 1, None),
        ];
        let rooms = [
            room("tenant-chor", 1, Some(1)),
            room("tenant-chor", 2, Some(1)),
            room("tenant-neu", 1, None),
        ];
        let pools = [
            pool("treffpunkt", 1, None),
            pool("treffpunkt", 4, Some(4)),
            // Not the platform's: no reconciler takes it.
            pool("anderswo", 1, None),
        ];
        assert_eq!(
            Backlog::of(&tenants, &rooms, &pools, "treffpunkt"),
            Backlog {
                tenants: 2,
                rooms: 2,
                pools: 1,
            }
        );
        assert_eq!(Backlog::of(&[], &[], &[], "treffpunkt"), Backlog::default());
    }
}

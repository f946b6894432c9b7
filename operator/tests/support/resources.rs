//! Tenants, Rooms and MediaPools as the cluster tests make them, and the kubelet's part for
//! the pods of a pool (no kubelet runs in the test environment).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use treffpunkt_operator::crd::{
    self, Lifetime, MediaNodeTemplate, MediaPoolSpec, OwnerKind, PoolNetwork, Replicas, Room,
    RoomSpec, Tenant, TenantLimits, TenantOwner, TenantPolicy, TenantSpec,
};

use super::eventually;

/// How long the operator gets to make something Ready.
pub const WAIT: Duration = Duration::from_secs(30);

/// A tenant for up to `rooms` rooms, owned by the user `owner` if there is one.
pub fn tenant_spec(owner: Option<&str>, rooms: i32) -> TenantSpec {
    TenantSpec {
        display_name: "Skatclub Mittwoch".to_owned(),
        owners: owner
            .map(|name| TenantOwner {
                kind: OwnerKind::User,
                name: name.to_owned(),
            })
            .into_iter()
            .collect(),
        limits: TenantLimits {
            rooms,
            ..TenantLimits::default()
        },
        policy: TenantPolicy::default(),
        branding: None,
        media_pools: Vec::new(),
        suspended: false,
    }
}

/// A persistent room with nothing set.
pub fn room_spec() -> RoomSpec {
    RoomSpec {
        display_name: None,
        access: None,
        password_secret_ref: None,
        moderator_password_secret_ref: None,
        max_participants: None,
        video_last_n: None,
        lifetime: Lifetime::Persistent,
    }
}

/// Creates a tenant and waits until the operator reports it Ready.
pub async fn ready_tenant(client: &Client, name: &str, spec: TenantSpec) -> Tenant {
    let tenants = Api::<Tenant>::all(client.clone());
    tenants
        .create(&PostParams::default(), &Tenant::new(name, spec))
        .await
        .expect("the tenant is accepted");
    eventually(WAIT, || async {
        let tenant = tenants.get(name).await.ok()?;
        let status = tenant.status.as_ref()?;
        (crd::condition_is_true(&status.conditions, "Ready")
            && status.observed_generation == tenant.metadata.generation)
            .then_some(tenant)
    })
    .await
    .unwrap_or_else(|| panic!("tenant {name} becomes Ready"))
}

/// Creates a room, retrying while the tenant's quota is still being computed.
pub async fn create_room(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: RoomSpec,
) -> Result<Room, kube::Error> {
    let rooms = Api::<Room>::namespaced(client.clone(), namespace);
    let mut last = None;
    for _ in 0..100 {
        match rooms
            .create(&PostParams::default(), &Room::new(name, spec.clone()))
            .await
        {
            Err(kube::Error::Api(status))
                if status.message.contains("status unknown for quota") =>
            {
                last = Some(kube::Error::Api(status));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return result,
        }
    }
    Err(last.expect("at least one try"))
}

/// A pool of one to three media nodes of an image nobody pulls.
pub fn pool_spec() -> MediaPoolSpec {
    MediaPoolSpec {
        replicas: Replicas { min: 1, max: 3 },
        target_load_percent: 70,
        template: Some(MediaNodeTemplate {
            image: "registry.invalid/treffpunkt/media-node:test".to_owned(),
            resources: None,
            node_selector: None,
            tolerations: None,
            max_participants: 100,
        }),
        external: false,
        network: PoolNetwork::default(),
        tenants: Vec::new(),
        client_networks: Vec::new(),
    }
}

/// An external pool for the one tenant `tenant`: its nodes run at the partner's site.
pub fn external_pool_spec(tenant: &str) -> MediaPoolSpec {
    MediaPoolSpec {
        template: None,
        external: true,
        tenants: vec![tenant.to_owned()],
        ..pool_spec()
    }
}

/// Creates a pod of `pool` named `name` in the platform's namespace, as a MediaPool's
/// Deployment would have made it (nothing runs it here).
pub async fn create_pool_pod(client: &Client, name: &str, pool: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": super::PLATFORM,
            "labels": {treffpunkt_operator::reconcile::POOL_LABEL: pool},
        },
        "spec": {"containers": [{"name": "media-node", "image": "registry.invalid/media-node:test"}]},
    }))
    .expect("a pod");
    Api::<Pod>::namespaced(client.clone(), super::PLATFORM)
        .create(&PostParams::default(), &pod)
        .await
        .expect("the pod is created");
}

/// Plays the kubelet's part: waits (for at most `limit`) for the pod of `pool`'s Deployment and
/// reports it ready.
pub async fn mark_media_node_ready(client: &Client, namespace: &str, pool: &str, limit: Duration) {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let selector = format!("{}={pool}", treffpunkt_operator::reconcile::POOL_LABEL);
    let pod = eventually(limit, || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await
    .expect("the pool's Deployment made a pod");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let ready = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
    ]}});
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&ready),
    )
    .await
    .expect("the pod's status is patched");
}

/// Whether an event with `reason` about the object named `name` appears in `namespace` (events
/// about cluster-scoped objects, such as Tenants, go to `default`) within `limit`.
pub async fn has_event(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
    limit: Duration,
) -> bool {
    event_note(client, namespace, name, reason, limit)
        .await
        .is_some()
}

/// The note of the first event with `reason` about the object named `name` in `namespace`, once
/// there is one (within `limit`).
pub async fn event_note(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
    limit: Duration,
) -> Option<String> {
    use k8s_openapi::api::events::v1::Event;
    let events = Api::<Event>::namespaced(client.clone(), namespace);
    eventually(limit, || async {
        let event = events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|event| {
                event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && event.reason.as_deref() == Some(reason)
            })?;
        Some(event.note.unwrap_or_default())
    })
    .await
}

/// Whether `replica` has started reconciliations of every kind and finished at least as many of
/// each as there are objects of that kind: the full pass a replica makes when it starts to lead.
pub async fn made_a_full_pass(client: &Client, replica: &super::Operator) -> Option<()> {
    use kube::api::ListParams;
    use treffpunkt_operator::crd::{MediaPool, Room, Tenant};
    let text = super::metrics(replica.admin).await;
    let started = |kind: &str| {
        super::counter(
            &text,
            &format!("treffpunkt_reconciliations_total{{controller=\"{kind}\"}}"),
        )
    };
    let finished = |kind: &str| {
        super::counter(
            &text,
            &format!("treffpunkt_reconciliation_duration_seconds_count{{controller=\"{kind}\"}}"),
        )
    };
    let all = ListParams::default();
    let objects = [
        (
            "tenant",
            Api::<Tenant>::all(client.clone())
                .list_metadata(&all)
                .await
                .ok()?
                .items
                .len(),
        ),
        (
            "room",
            Api::<Room>::all(client.clone())
                .list_metadata(&all)
                .await
                .ok()?
                .items
                .len(),
        ),
        (
            "mediapool",
            Api::<MediaPool>::namespaced(client.clone(), super::PLATFORM)
                .list_metadata(&all)
                .await
                .ok()?
                .items
                .len(),
        ),
    ];
    objects
        .iter()
        .all(|(kind, count)| started(kind) > 0 && finished(kind) >= *count as u64)
        .then_some(())
}

//! What someone else made under a name the operator uses, against a real Kubernetes API server
//! (etcd, kube-apiserver and kube-controller-manager from `deploy/testenv`): the operator never
//! adopts, changes or deletes it, and says so in the owner's status and in an event. And what
//! the operator made itself follows its owner exactly, a field dropped from the spec included.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::resources::{WAIT, has_event, pool_spec, ready_tenant, room_spec, tenant_spec};
use support::{PLATFORM, admin, eventually, impersonating, operator, unique};
use treffpunkt_operator::crd::{self, MediaPool, Room, Tenant, TenantStatus};

/// Waits until tenant `name` reports `Ready=False` for `reason` for its current generation.
async fn not_ready_for(client: &Client, name: &str, reason: &str) -> TenantStatus {
    let tenants = Api::<Tenant>::all(client.clone());
    eventually(WAIT, || async {
        let tenant = tenants.get(name).await.ok()?;
        let status = tenant.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "False"
            && ready.reason == reason
            && status.observed_generation == tenant.metadata.generation)
            .then_some(status)
    })
    .await
    .unwrap_or_else(|| panic!("tenant {name} reports Ready=False for {reason}"))
}

/// Whether the operator has written its labels or an owner reference onto `meta`.
fn marked_by_the_operator(meta: &ObjectMeta) -> bool {
    let labels = meta.labels.clone().unwrap_or_default();
    labels.contains_key("treffpunkt.io/tenant")
        || labels.contains_key("app.kubernetes.io/managed-by")
        || meta
            .owner_references
            .as_ref()
            .is_some_and(|r| !r.is_empty())
}

/// Makes `namespace` as someone else would, with a ConfigMap and a Secret of theirs in it.
async fn someone_elses_namespace(client: &Client, namespace: &str) {
    support::ensure_namespace(client, namespace).await;
    let notes: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "notizen"}, "data": {"plan": "nur fuer uns"},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &notes)
        .await
        .unwrap();
    let access: Secret = serde_json::from_value(json!({
        "metadata": {"name": "zugang"}, "stringData": {"token": "geheim"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &access)
        .await
        .unwrap();
}

/// How many objects of kind `K` are in `namespace`.
async fn count<K>(client: &Client, namespace: &str) -> usize
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .items
        .len()
}

/// Nothing of the operator's is in `namespace`, and what its owner keeps there is unchanged.
async fn assert_it_is_as_its_owner_left_it(client: &Client, namespace: &str) {
    let ns = Api::<Namespace>::all(client.clone())
        .get(namespace)
        .await
        .expect("the namespace is there");
    assert!(
        !marked_by_the_operator(&ns.metadata),
        "not adopted: {:?}",
        ns.metadata
    );
    assert!(
        ns.metadata.deletion_timestamp.is_none(),
        "not being deleted"
    );
    assert_eq!(count::<Role>(client, namespace).await, 0, "no Role");
    assert_eq!(
        count::<RoleBinding>(client, namespace).await,
        0,
        "no RoleBinding"
    );
    assert_eq!(
        count::<ResourceQuota>(client, namespace).await,
        0,
        "no quota"
    );
    assert_eq!(
        count::<NetworkPolicy>(client, namespace).await,
        0,
        "no policy"
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let names: Vec<String> = secrets
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(names, ["zugang"], "no signing key");
    let access = secrets.get("zugang").await.unwrap();
    assert_eq!(access.data.unwrap()["token"].0, b"geheim");
    let notes = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get("notizen")
        .await
        .expect("their ConfigMap");
    assert_eq!(notes.data.unwrap()["plan"], "nur fuer uns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_someone_else_made_is_neither_adopted_nor_deleted() {
    operator();
    let client = admin().await;
    let name = unique("fremd");
    let namespace = crd::tenant_namespace(&name);
    someone_elses_namespace(&client, &namespace).await;

    let tenants = Api::<Tenant>::all(client.clone());
    tenants
        .create(
            &PostParams::default(),
            &Tenant::new(&name, tenant_spec(Some("mallory"), 5)),
        )
        .await
        .unwrap();
    let status = not_ready_for(&client, &name, "NamespaceNotOwned").await;
    assert_eq!(
        status.namespace, None,
        "the tenant has no namespace of its own"
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(ready.message.contains(&namespace), "{}", ready.message);
    assert!(
        has_event(&client, "default", &name, "NamespaceNotOwned", WAIT).await,
        "an event says so"
    );
    assert_it_is_as_its_owner_left_it(&client, &namespace).await;

    // A room someone makes there is not the tenant's: it gets no finalizer and no status. That
    // nothing is written is no event to wait for: a bounded wait gives a write 2 s to show.
    let rooms = Api::<Room>::namespaced(client.clone(), &namespace);
    rooms
        .create(
            &PostParams::default(),
            &Room::new("hinterzimmer", room_spec()),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let room = rooms.get("hinterzimmer").await.unwrap();
    assert!(
        room.finalizers().is_empty() && room.status.is_none(),
        "{room:?}"
    );

    // The Tenant goes; the namespace stays, with everything in it.
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let gone = eventually(WAIT, || async {
        tenants.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the Tenant goes");
    assert!(
        has_event(&client, "default", &name, "NamespaceKept", WAIT).await,
        "an event says the namespace stays"
    );
    assert_it_is_as_its_owner_left_it(&client, &namespace).await;
    assert!(rooms.get_opt("hinterzimmer").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_someone_else_put_in_place_is_not_overwritten() {
    operator();
    let client = admin().await;
    let name = unique("schluessel");
    ready_tenant(&client, &name, tenant_spec(None, 5)).await;
    let namespace = crd::tenant_namespace(&name);
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);

    // Someone replaces the tenant's key with one of their own. (Should the operator make its
    // key again in between, that one goes too.)
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": "treffpunkt-signing-key"}, "stringData": {"key": "von jemand anderem"},
    }))
    .unwrap();
    let mut replaced = false;
    for _ in 0..50 {
        let _ = secrets
            .delete("treffpunkt-signing-key", &DeleteParams::default())
            .await;
        match secrets.create(&PostParams::default(), &theirs).await {
            Ok(_) => {
                replaced = true;
                break;
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => continue,
            Err(error) => panic!("the key cannot be replaced: {error}"),
        }
    }
    assert!(replaced, "someone else's key is in place");

    // A change of the Tenant makes the operator look again.
    Api::<Tenant>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"displayName": "Neuer Name"}})),
        )
        .await
        .unwrap();
    let status = not_ready_for(&client, &name, "ObjectNotOwned").await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("Secret treffpunkt-signing-key"),
        "{}",
        ready.message
    );
    assert_eq!(status.namespace.as_deref(), Some(namespace.as_str()));
    assert!(
        has_event(&client, "default", &name, "ObjectNotOwned", WAIT).await,
        "an event says so"
    );
    let key = secrets.get("treffpunkt-signing-key").await.unwrap();
    assert!(
        !marked_by_the_operator(&key.metadata),
        "not adopted: {:?}",
        key.metadata
    );
    assert_eq!(
        key.data.unwrap()["key"].0,
        b"von jemand anderem",
        "not overwritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_taken_off_a_tenant_loses_the_admins_rights() {
    operator();
    let client = admin().await;
    let name = unique("wechsel");
    ready_tenant(&client, &name, tenant_spec(Some("dora"), 5)).await;
    let namespace = crd::tenant_namespace(&name);
    let dora = impersonating("dora", &["system:authenticated"]).await;
    let rooms = Api::<Room>::namespaced(dora, &namespace);
    let may = eventually(WAIT, || async {
        rooms.list_metadata(&ListParams::default()).await.ok()
    })
    .await;
    assert!(may.is_some(), "Dora administers the tenant's rooms");

    Api::<Tenant>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"owners": null}})),
        )
        .await
        .unwrap();
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &namespace);
    let unbound = eventually(WAIT, || async {
        let binding = bindings.get("treffpunkt-tenant-admin").await.ok()?;
        binding.subjects.is_none().then_some(())
    })
    .await;
    assert!(unbound.is_some(), "the admins' binding names nobody");
    let refused = eventually(WAIT, || async {
        match rooms.list_metadata(&ListParams::default()).await {
            Err(kube::Error::Api(status)) if status.code == 403 => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(refused.is_some(), "Dora may no longer see the rooms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_someone_else_made_under_a_pools_name_is_left_alone() {
    operator();
    let client = admin().await;
    let pool = unique("fremdpool");
    let workload = format!("treffpunkt-media-{pool}");
    let services = Api::<Service>::namespaced(client.clone(), PLATFORM);
    let theirs: Service = serde_json::from_value(json!({
        "metadata": {"name": workload, "labels": {"app": "theirs"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 8080}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();

    let pools = Api::<MediaPool>::namespaced(client.clone(), PLATFORM);
    pools
        .create(&PostParams::default(), &MediaPool::new(&pool, pool_spec()))
        .await
        .unwrap();
    let ready = eventually(WAIT, || async {
        let status = pools.get(&pool).await.ok()?.status?;
        let ready = status.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "False" && ready.reason == "ObjectNotOwned").then_some(ready)
    })
    .await
    .expect("the pool reports Ready=False for ObjectNotOwned");
    assert!(
        ready.message.contains(&format!("Service {workload}")),
        "{}",
        ready.message
    );
    assert!(
        has_event(&client, PLATFORM, &pool, "ObjectNotOwned", WAIT).await,
        "an event says so"
    );
    let service = services.get(&workload).await.unwrap();
    assert!(
        !marked_by_the_operator(&service.metadata),
        "not adopted: {:?}",
        service.metadata
    );
    let spec = service.spec.unwrap();
    assert_eq!(
        spec.selector,
        Some([("app".to_owned(), "theirs".to_owned())].into()),
        "not changed"
    );
    assert_eq!(spec.ports.unwrap()[0].port, 8080);
    // What has no one else's object in the way is made as usual.
    let deployment = Api::<Deployment>::namespaced(client.clone(), PLATFORM)
        .get(&workload)
        .await
        .expect("the pool's Deployment");
    assert!(marked_by_the_operator(&deployment.metadata));
    Api::<PodDisruptionBudget>::namespaced(client.clone(), PLATFORM)
        .get(&workload)
        .await
        .expect("the pool's budget");

    // The pool goes; the Service stays.
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    let gone = eventually(WAIT, || async {
        pools.get_opt(&pool).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the pool goes");
    let service = services.get(&workload).await.expect("the Service stays");
    assert!(service.metadata.deletion_timestamp.is_none());
}

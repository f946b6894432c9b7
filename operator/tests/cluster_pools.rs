//! MediaPools and the media nodes' pods against a real Kubernetes API server (etcd,
//! kube-apiserver and kube-controller-manager from `deploy/testenv`): a pool's Deployment and
//! the status it follows, the pod of a draining node, and a second pass over a tenant, a room
//! and a pool that writes nothing.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use support::resources::{
    WAIT, create_pool_pod, create_room, mark_media_node_ready, pool_spec, ready_tenant, room_spec,
    tenant_spec,
};
use support::{PLATFORM, admin, eventually, operator, unique};
use treffpunkt_operator::crd::{self, MediaPool, Room, RoomPhase, Tenant};

/// The pod of a media node: its media ports on the host's address, ready on `/readyz`, no
/// root, no capabilities, a read-only root, the host's address announced, one per host and no
/// service-account token.
fn assert_runs_a_media_node(pod: PodSpec) {
    let container = &pod.containers[0];
    let ports: Vec<(String, i32, Option<i32>)> = container
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| {
            (
                p.protocol.unwrap_or_default(),
                p.container_port,
                p.host_port,
            )
        })
        .collect();
    assert!(
        ports.contains(&("UDP".to_owned(), 10000, Some(10000))),
        "{ports:?}"
    );
    assert!(
        ports.contains(&("TCP".to_owned(), 10443, Some(10443))),
        "{ports:?}"
    );
    let probe = container.readiness_probe.clone().unwrap().http_get.unwrap();
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.unwrap().drop,
        Some(vec!["ALL".to_owned()])
    );
    let announce = container
        .env
        .clone()
        .unwrap()
        .into_iter()
        .find(|e| e.name == "TREFFPUNKT_ANNOUNCE_IP")
        .unwrap();
    assert_eq!(
        announce.value_from.unwrap().field_ref.unwrap().field_path,
        "status.hostIP"
    );
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    assert_eq!(
        anti.required_during_scheduling_ignored_during_execution
            .unwrap()[0]
            .topology_key,
        "kubernetes.io/hostname"
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediapool_becomes_a_deployment_whose_status_it_follows() {
    operator();
    let client = admin().await;
    let name = unique("pool");
    let pools = Api::<MediaPool>::namespaced(client.clone(), PLATFORM);
    pools
        .create(&PostParams::default(), &MediaPool::new(&name, pool_spec()))
        .await
        .unwrap();
    let workload = format!("treffpunkt-media-{name}");
    let deployments = Api::<Deployment>::namespaced(client.clone(), PLATFORM);
    let deployment = eventually(WAIT, || async {
        deployments.get_opt(&workload).await.ok()?
    })
    .await
    .expect("the pool's Deployment appears");
    assert_runs_a_media_node(deployment.spec.unwrap().template.spec.unwrap());
    assert!(
        Api::<PodDisruptionBudget>::namespaced(client.clone(), PLATFORM)
            .get(&workload)
            .await
            .is_ok()
    );
    assert!(
        Api::<Service>::namespaced(client.clone(), PLATFORM)
            .get(&workload)
            .await
            .is_ok()
    );

    // No kubelet runs here: play its part and report the pod ready.
    let not_ready = eventually(WAIT, || async {
        let status = pools.get(&name).await.ok()?.status?;
        (!crd::condition_is_true(&status.conditions, "Ready") && status.replicas == 1).then_some(())
    })
    .await;
    assert!(
        not_ready.is_some(),
        "the pool is not ready while its node is not"
    );
    mark_media_node_ready(&client, PLATFORM, &name, WAIT).await;
    let ready = eventually(WAIT, || async {
        let status = pools.get(&name).await.ok()?.status?;
        (crd::condition_is_true(&status.conditions, "Ready") && status.ready_replicas == 1)
            .then_some(())
    })
    .await;
    assert!(ready.is_some(), "the pool follows its Deployment to Ready");

    // The networks a pool is near are CIDRs; anything else is refused when it is applied.
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let near = |networks: &[&str]| {
        let mut spec = pool_spec();
        spec.client_networks = networks.iter().map(|net| (*net).to_owned()).collect();
        MediaPool::new(&unique("near"), spec)
    };
    assert!(
        pools
            .create(&dry_run, &near(&["10.20.0.0/16", "2001:db8::/48"]))
            .await
            .is_ok()
    );
    let refused = pools.create(&dry_run, &near(&["the library"])).await;
    assert!(
        refused.is_err(),
        "a network that is no CIDR is refused: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_media_node_pod_is_marked_to_go_first() {
    let operator = operator();
    let client = admin().await;
    let pods = Api::<Pod>::namespaced(client.clone(), PLATFORM);
    let grant = support::grant_key(&client).await;
    // The pod a MediaPool's Deployment would have made (nothing runs it here), and a node of
    // another pool that has a pod's name: only a pod of the draining node's own pool is marked.
    let (own, foreign) = (unique("media-pod"), unique("media-pod"));
    let mut running = Vec::new();
    // The foreign node drains first: the replica marks pods in the order the nodes drain, so
    // once the own pod is marked, the foreign one has been decided on.
    for (name, pod_pool, which) in [(&foreign, "other", "foreign"), (&own, "default", "own")] {
        create_pool_pod(&client, name, pod_pool).await;
        let health = std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let config = support::nodes::node_config(operator, name, "default", &grant, Some(health));
        let node = treffpunkt_media_node::MediaNode::bind(config)
            .await
            .unwrap();
        let handle = node.handle();
        running.push(tokio::spawn(node.run()));
        // The node tells the replicas it is attached to that it drains: drain once it is
        // attached, which is when it says it is ready.
        let attached = eventually(WAIT, || async {
            let (status, _) = support::http(health, "GET", "/readyz").await?;
            (status == 200).then_some(())
        })
        .await;
        assert!(attached.is_some(), "the {which} node attaches");
        handle.drain(true, Duration::from_secs(30)).await;
    }
    let cost = |name: String| {
        let pods = pods.clone();
        async move {
            let pod = pods.get(&name).await.ok()?;
            pod.annotations()
                .get("controller.kubernetes.io/pod-deletion-cost")
                .cloned()
        }
    };
    let marked = eventually(WAIT, || async {
        (cost(own.clone()).await? == "-1000").then_some(())
    })
    .await;
    assert!(
        marked.is_some(),
        "the draining node's pod has the lowest deletion cost"
    );
    // An empty node is done draining at once.
    for run in running {
        assert!(
            tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .is_ok()
        );
    }
    assert_eq!(
        cost(foreign.clone()).await,
        None,
        "a pod of another pool is left as it is"
    );
}

/// The resourceVersions of everything the operator made for a tenant, a room and a pool.
async fn versions(client: &Client, tenant: &str, pool: &str) -> BTreeMap<String, String> {
    let namespace = crd::tenant_namespace(tenant);
    let workload = format!("treffpunkt-media-{pool}");
    let mut versions = BTreeMap::new();
    let mut record = |what: &str, version: Option<String>| {
        versions.insert(
            what.to_owned(),
            version.expect("an object has a resourceVersion"),
        );
    };
    record(
        "tenant",
        Api::<Tenant>::all(client.clone())
            .get(tenant)
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "namespace",
        Api::<Namespace>::all(client.clone())
            .get(&namespace)
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "role",
        Api::<Role>::namespaced(client.clone(), &namespace)
            .get("treffpunkt-tenant-admin")
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "rolebinding",
        Api::<RoleBinding>::namespaced(client.clone(), &namespace)
            .get("treffpunkt-tenant-admin")
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "secrets-binding",
        Api::<RoleBinding>::namespaced(client.clone(), &namespace)
            .get("treffpunkt-operator-secrets")
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "quota",
        Api::<ResourceQuota>::namespaced(client.clone(), &namespace)
            .get("treffpunkt")
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "networkpolicy",
        Api::<NetworkPolicy>::namespaced(client.clone(), &namespace)
            .get("treffpunkt-default-deny")
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "secret",
        Api::<Secret>::namespaced(client.clone(), &namespace)
            .get("treffpunkt-signing-key")
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "room",
        Api::<Room>::namespaced(client.clone(), &namespace)
            .get("stamm")
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "mediapool",
        Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
            .get(pool)
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "deployment",
        Api::<Deployment>::namespaced(client.clone(), PLATFORM)
            .get(&workload)
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "pdb",
        Api::<PodDisruptionBudget>::namespaced(client.clone(), PLATFORM)
            .get(&workload)
            .await
            .unwrap()
            .resource_version(),
    );
    record(
        "service",
        Api::<Service>::namespaced(client.clone(), PLATFORM)
            .get(&workload)
            .await
            .unwrap()
            .resource_version(),
    );
    versions
}

/// Whether everything has been written that the operator and kube-controller-manager write
/// for the tenant, its room `stamm` and the pool: the room is Idle; the quota counts the room,
/// and so does the tenant's status (the tenant is reconciled again when its quota changes);
/// the pool reports the pod its Deployment made.
async fn settled(client: &Client, tenant: &str, pool: &str) -> Option<()> {
    let namespace = crd::tenant_namespace(tenant);
    let room = Api::<Room>::namespaced(client.clone(), &namespace)
        .get("stamm")
        .await
        .ok()?;
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &namespace)
        .get("treffpunkt")
        .await
        .ok()?;
    let used = quota
        .status?
        .used?
        .get("count/rooms.treffpunkt.io")?
        .0
        .clone();
    let usage = Api::<Tenant>::all(client.clone())
        .get(tenant)
        .await
        .ok()?
        .status?
        .usage?;
    let pool_status = Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .get(pool)
        .await
        .ok()?
        .status?;
    (room.status?.phase == Some(RoomPhase::Idle)
        && used == "1"
        && usage.rooms == 1
        && pool_status.replicas == 1)
        .then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pass_over_everything_ready_writes_nothing() {
    operator();
    let client = admin().await;
    let tenant = unique("ruhig");
    ready_tenant(&client, &tenant, tenant_spec(Some("carla"), 3)).await;
    let namespace = crd::tenant_namespace(&tenant);
    create_room(&client, &namespace, "stamm", room_spec())
        .await
        .unwrap();
    let pool = unique("ruhepool");
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .create(&PostParams::default(), &MediaPool::new(&pool, pool_spec()))
        .await
        .unwrap();
    let ready = eventually(WAIT, || settled(&client, &tenant, &pool)).await;
    assert!(ready.is_some(), "everything is ready");
    let before = versions(&client, &tenant, &pool).await;

    // A second replica with a lease of its own runs a full pass of every reconciler.
    let second = support::start_operator(&unique("zweiter"));
    let passed = eventually(WAIT, || {
        support::resources::made_a_full_pass(&client, &second)
    })
    .await;
    assert!(passed.is_some(), "the second replica reconciled every kind");
    // That nothing is written is no event to wait for: a bounded wait gives any late write of
    // the pass 2 s to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        versions(&client, &tenant, &pool).await,
        before,
        "nothing was written"
    );
}

//! Leader election and restarts with real operator processes against a real API server: of two
//! processes only the Lease holder reconciles; when it dies the other takes over within the
//! lease time; a Tenant deleted while no operator runs is cleaned up by the next one, its
//! finalizer never left hanging; changes made while nobody leads show in every replica's
//! reconcile backlog until a leader takes them; and a media node at a partner's site that
//! reaches two replicas through one load-balanced address attaches to both, so participants of
//! either replica meet on it, also after a replica restarts.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use support::partner::{balancer, fetch_credential, field};
use support::resources::{external_pool_spec, ready_tenant, tenant_spec};
use support::{
    NodeProcess, OperatorProcess, PLATFORM, admin, counter, ensure_namespace, eventually,
    keeps_receiving, metrics, unique,
};
use treffpunkt_client::{Participant, Publish, signal_url};
use treffpunkt_operator::crd::{self, MediaPool, Room, Tenant, TenantSpec};

const LEASE_SECONDS: u64 = 4;

/// The tests of this file run one at a time: each has operators of its own, and another test's
/// operator must not do the work a test expects of its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Tenant reconciliations `replica` has run (0 while it does not answer yet).
async fn tenant_reconciliations(replica: &OperatorProcess) -> u64 {
    match tokio::net::TcpStream::connect(replica.admin).await {
        Ok(_) => counter(
            &metrics(replica.admin).await,
            "treffpunkt_reconciliations_total{controller=\"tenant\"}",
        ),
        Err(_) => 0,
    }
}

fn spec() -> TenantSpec {
    serde_json::from_value(serde_json::json!({"displayName": "Chor"})).unwrap()
}

async fn holder(client: &Client, lease: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), PLATFORM)
        .get_opt(lease)
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn ready(client: &Client, name: &str) -> bool {
    eventually(Duration::from_secs(30), || async {
        let tenant = Api::<Tenant>::all(client.clone()).get(name).await.ok()?;
        crd::condition_is_true(&tenant.status?.conditions, "Ready").then_some(())
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_the_other_takes_over_when_it_dies() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    ensure_namespace(&client, PLATFORM).await;
    let lease = unique("lease");
    let first = OperatorProcess::start("replica-a", &lease);
    let has_holder = eventually(Duration::from_secs(30), || holder(&client, &lease)).await;
    assert_eq!(
        has_holder.as_deref(),
        Some("replica-a"),
        "the first replica leads"
    );
    let second = OperatorProcess::start("replica-b", &lease);

    let tenants = Api::<Tenant>::all(client.clone());
    let early = unique("frueh");
    tenants
        .create(&PostParams::default(), &Tenant::new(&early, spec()))
        .await
        .unwrap();
    assert!(ready(&client, &early).await, "the leader reconciles");
    assert!(tenant_reconciliations(&first).await > 0);
    assert_eq!(
        tenant_reconciliations(&second).await,
        0,
        "the follower does not reconcile"
    );
    assert_eq!(holder(&client, &lease).await.as_deref(), Some("replica-a"));

    let mut first = first;
    first.kill();
    let took_over = eventually(Duration::from_secs(LEASE_SECONDS * 3), || async {
        (holder(&client, &lease).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    assert!(
        took_over.is_some(),
        "the follower takes the lease within the lease time"
    );
    let late = unique("spaet");
    tenants
        .create(&PostParams::default(), &Tenant::new(&late, spec()))
        .await
        .unwrap();
    assert!(ready(&client, &late).await, "the new leader reconciles");
    assert!(tenant_reconciliations(&second).await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_deleted_while_no_operator_runs_is_cleaned_up_by_the_next() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    ensure_namespace(&client, PLATFORM).await;
    let lease = unique("lease");
    let replica = OperatorProcess::start("replica-c", &lease);
    let name = unique("geht");
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), &Tenant::new(&name, spec()))
        .await
        .unwrap();
    assert!(ready(&client, &name).await);
    let mut replica = replica;
    replica.kill();

    // Deleted while nobody reconciles: the finalizer holds the Tenant.
    Api::<Tenant>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    // That nothing removes it is no event to wait for: a bounded wait of a second shows it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = Api::<Tenant>::all(client.clone())
        .get_opt(&name)
        .await
        .unwrap();
    assert!(held.is_some_and(|t| t.metadata.deletion_timestamp.is_some()));

    // The next operator (it must first wait out the dead one's lease) finishes the cleanup.
    let _next = OperatorProcess::start("replica-d", &lease);
    let namespace = crd::tenant_namespace(&name);
    let cleaned = eventually(Duration::from_secs(60), || async {
        let tenant_gone = Api::<Tenant>::all(client.clone())
            .get_opt(&name)
            .await
            .ok()?
            .is_none();
        let namespace_gone = Api::<Namespace>::all(client.clone())
            .get_opt(&namespace)
            .await
            .ok()?
            .is_none();
        (tenant_gone && namespace_gone).then_some(())
    })
    .await;
    assert!(cleaned.is_some(), "the tenant and its namespace are gone");
}

/// The `controller`'s reconcile backlog as `replica` reports it (`None` until it answers).
async fn backlog(replica: &OperatorProcess, controller: &str) -> Option<u64> {
    tokio::net::TcpStream::connect(replica.admin).await.ok()?;
    let series = format!("treffpunkt_reconcile_backlog{{controller=\"{controller}\"}}");
    let text = metrics(replica.admin).await;
    text.contains(&series).then(|| counter(&text, &series))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_nobody_leads_show_in_the_backlog_until_a_leader_takes_them() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    ensure_namespace(&client, PLATFORM).await;
    // The Lease is held by another replica, which the test plays: it renews the Lease every
    // second, so this replica cannot lead.
    let lease = unique("lease");
    let leases = Api::<Lease>::namespaced(client.clone(), PLATFORM);
    let now = MicroTime(Timestamp::now());
    let held = Lease {
        metadata: ObjectMeta {
            name: Some(lease.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("elsewhere".to_owned()),
            lease_duration_seconds: Some(LEASE_SECONDS as i32),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    };
    leases.create(&PostParams::default(), &held).await.unwrap();
    let renewing = tokio::spawn({
        let (leases, lease) = (leases.clone(), lease.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let renewed = MicroTime(Timestamp::now());
                let patch = serde_json::json!({"spec": {"renewTime": renewed}});
                let _ = leases
                    .patch(&lease, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        }
    });
    let replica = OperatorProcess::start("replica-d", &lease);
    let before = eventually(Duration::from_secs(30), || backlog(&replica, "tenant"))
        .await
        .expect("the replica reports its backlog");

    let tenants = Api::<Tenant>::all(client.clone());
    let names = [unique("wartet"), unique("wartet")];
    for name in &names {
        tenants
            .create(&PostParams::default(), &Tenant::new(name, spec()))
            .await
            .unwrap();
    }
    let waiting = eventually(Duration::from_secs(30), || async {
        (backlog(&replica, "tenant").await? >= before + 2).then_some(())
    })
    .await;
    assert!(waiting.is_some(), "the new tenants wait, and say so");
    assert_eq!(
        tenant_reconciliations(&replica).await,
        0,
        "nobody reconciles"
    );

    // The other replica dies: its Lease runs out, this one leads, and the backlog empties.
    renewing.abort();
    for name in &names {
        assert!(ready(&client, name).await, "the new leader reconciles");
    }
    let caught_up = eventually(Duration::from_secs(30), || async {
        (backlog(&replica, "tenant").await? <= before).then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the backlog empties once a leader works"
    );
}

/// Whether `replica` lists node `id` as attached within a while.
async fn knows_node(replica: &OperatorProcess, id: &str) -> bool {
    eventually(Duration::from_secs(40), || async {
        let nodes = replica.nodes().await;
        nodes.iter().any(|node| node["id"] == id).then_some(())
    })
    .await
    .is_some()
}

/// Joins room `probe` of `tenant` through `replica`'s gateway, trying for a while.
async fn join(replica: &OperatorProcess, tenant: &str, name: &str, publish: bool) -> Participant {
    let url = signal_url(replica.http, tenant, "probe");
    let publish = publish.then(Publish::default);
    let joined = eventually(Duration::from_secs(20), || async {
        Participant::join(&url, name, publish.clone()).await.ok()
    })
    .await;
    joined.unwrap_or_else(|| panic!("{name} joins"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_node_behind_one_address_attaches_to_every_replica() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    ensure_namespace(&client, PLATFORM).await;
    let lease = unique("lease");
    let a = OperatorProcess::start("replica-e", &lease);
    let mut b = OperatorProcess::start("replica-f", &lease);
    assert!(a.serving().await && b.serving().await);
    let (tenant, pool) = (unique("verein"), unique("vereinsheim"));
    let mut spec = tenant_spec(None, 5);
    spec.policy.adhoc_rooms = true;
    spec.media_pools = vec![pool.clone()];
    ready_tenant(&client, &tenant, spec).await;
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .create(
            &PostParams::default(),
            &MediaPool::new(&pool, external_pool_spec(&tenant)),
        )
        .await
        .unwrap();
    let namespace = crd::tenant_namespace(&tenant);
    let dir = std::env::temp_dir().join(unique("treffpunkt-partner"));
    let partner = Api::<Secret>::namespaced(client.clone(), &namespace);
    let credential = fetch_credential(&partner, &pool, &dir).await;
    let grant_key = field(&credential, "grant-key").unwrap();

    // The partner's site reaches the control plane through one address only; the balancer
    // behind it shows each connection one replica.
    let shared = balancer(vec![a.grpc, b.grpc]).await;
    let credential = (pool.clone(), dir.clone());
    let node = NodeProcess::start_to(
        "heim-1",
        &format!("http://{shared}"),
        &grant_key,
        &credential,
    );
    assert!(
        knows_node(&a, &node.id).await,
        "the first replica knows the node"
    );
    assert!(knows_node(&b, &node.id).await, "so does the second");

    // Anna reached one replica's gateway and Ben the other's: they meet on the partner's node.
    let anna = join(&a, &tenant, "Anna", true).await;
    let ben = join(&b, &tenant, "Ben", false).await;
    let placed = Api::<Room>::namespaced(client.clone(), &namespace)
        .get("probe")
        .await
        .unwrap()
        .status
        .and_then(|status| status.node);
    assert_eq!(placed.as_deref(), Some(node.id.as_str()));
    assert!(keeps_receiving(&ben, &anna).await, "Ben receives Anna");

    // A replica that restarts is found again through the same address.
    b.restart();
    assert!(b.serving().await);
    assert!(
        knows_node(&b, &node.id).await,
        "the restarted replica knows the node again"
    );
    let clara = join(&b, &tenant, "Clara", false).await;
    assert!(keeps_receiving(&clara, &anna).await, "Clara receives Anna");
    assert!(
        keeps_receiving(&ben, &anna).await,
        "Ben still receives Anna"
    );
    let _ = std::fs::remove_dir_all(dir);
}

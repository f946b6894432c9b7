//! Leader election and restarts with real operator processes against a real API server: of two
//! processes only the Lease holder reconciles; when it dies the other takes over within the
//! lease time; and a Tenant deleted while no operator runs is cleaned up by the next one, its
//! finalizer never left hanging.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use support::{
    OperatorProcess, PLATFORM, admin, counter, ensure_namespace, eventually, metrics, unique,
};
use treffpunkt_operator::crd::{self, Tenant, TenantSpec};

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

//! A quiet operator: a platform at rest costs the API server no writes.
//!
//! 100 Tenants with 10 Rooms each and a MediaPool on the real API server, the shared operator
//! reconciling them. Once everything is Ready and settled, the API server's audit log (see
//! `support::audit_files`) counts the write requests for `TREFFPUNKT_QUIET_SECONDS` (300 by
//! default): there must be none. Then a second replica with a lease of its own makes the full
//! pass a replica makes when it starts to lead, as after a restart: it finds everything as it
//! should be and writes nothing either. Leases are not counted: leader election renews them
//! every few seconds whatever the platform holds. Nor are the writes of kube-controller-manager
//! and the API server itself.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use support::audit::{audit_offset, per_minute, requests_of, requests_since, writes};
use support::kubelet::pool_event;
use support::resources::{create_room, pool_spec, room_spec, tenant_spec};
use support::{PLATFORM, admin, eventually, operator, unique};
use treffpunkt_operator::crd::{self, MediaPool, Room, Tenant};

const TENANTS: usize = 100;
const ROOMS_PER_TENANT: usize = 10;

/// Whether every tenant of the test is Ready and every room Accepted, each for its current
/// generation.
async fn all_settled(client: &Client, prefix: &str) -> Option<()> {
    let tenants = Api::<Tenant>::all(client.clone())
        .list(&ListParams::default())
        .await
        .ok()?;
    let ours = tenants.items.iter().filter(|t| {
        t.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(prefix))
    });
    let mut ready = 0;
    for tenant in ours {
        let status = tenant.status.as_ref()?;
        let usage = status.usage.as_ref()?;
        (crd::condition_is_true(&status.conditions, "Ready")
            && status.observed_generation == tenant.metadata.generation
            && usage.rooms as usize == ROOMS_PER_TENANT)
            .then_some(())?;
        ready += 1;
    }
    (ready == TENANTS).then_some(())?;
    let rooms = Api::<Room>::all(client.clone())
        .list(&ListParams::default())
        .await
        .ok()?;
    let accepted = rooms
        .items
        .iter()
        .filter(|r| {
            r.metadata
                .namespace
                .as_deref()
                .is_some_and(|n| n.contains(prefix))
        })
        .filter(|r| {
            r.status.as_ref().is_some_and(|s| {
                crd::condition_is_true(&s.conditions, "Accepted")
                    && s.observed_generation == r.metadata.generation
            })
        })
        .count();
    (accepted == TENANTS * ROOMS_PER_TENANT).then_some(())
}

/// The platform's tenants, their rooms and a MediaPool; returns the pool's name.
async fn make_the_platform(client: &Client, prefix: &str) -> String {
    let tenants = Api::<Tenant>::all(client.clone());
    for index in 0..TENANTS {
        let name = format!("{prefix}-{index}");
        let spec = tenant_spec(None, ROOMS_PER_TENANT as i32 + 5);
        tenants
            .create(&PostParams::default(), &Tenant::new(&name, spec))
            .await
            .expect("a tenant");
    }
    for index in 0..TENANTS {
        let namespace = crd::tenant_namespace(&format!("{prefix}-{index}"));
        for room in 0..ROOMS_PER_TENANT {
            create_room(client, &namespace, &format!("raum-{room}"), room_spec())
                .await
                .expect("a room");
        }
    }
    let pool = unique("ruhig");
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .create(&PostParams::default(), &MediaPool::new(&pool, pool_spec()))
        .await
        .unwrap();
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_at_rest_and_a_replica_that_starts_cost_no_writes() {
    operator();
    let client = admin().await;
    let prefix = unique("still");
    let started = Instant::now();
    let pool = make_the_platform(&client, &prefix).await;
    let settled = eventually(Duration::from_secs(600), || all_settled(&client, &prefix)).await;
    assert!(
        settled.is_some(),
        "every tenant Ready and every room Accepted"
    );
    eprintln!(
        "{TENANTS} tenants and {} rooms ready in {:.0} s",
        TENANTS * ROOMS_PER_TENANT,
        started.elapsed().as_secs_f64()
    );
    // No Kubernetes node runs media nodes here: the scheduler turns the pool's pod away, and
    // the pool says so once (an event, within the autoscaler's next look at its pods). That is
    // part of settling, not of rest.
    assert!(
        pool_event(&client, &pool, "NoRoom").await.is_some(),
        "the pool says its node found no room"
    );
    // Status updates trailing the last room settle.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let quiet = std::env::var("TREFFPUNKT_QUIET_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let offset = audit_offset();
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(quiet)).await;
    let at_rest = requests_since(offset);
    eprintln!(
        "at rest for {quiet} s: {:.1} requests a minute, {at_rest:?}",
        per_minute(&at_rest, window.elapsed())
    );
    assert_eq!(writes(&at_rest), BTreeMap::new(), "no writes at rest");

    // A replica that starts to lead (a lease of its own) passes over everything.
    let offset = audit_offset();
    let lease = unique("neustart");
    let second = support::start_operator(&lease);
    let passed = eventually(Duration::from_secs(300), || {
        support::resources::made_a_full_pass(&client, &second)
    })
    .await;
    assert!(passed.is_some(), "the new replica reconciled every object");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pass = requests_since(offset);
    eprintln!("the new replica's first pass: {pass:?}");
    assert_eq!(
        writes(&pass),
        BTreeMap::new(),
        "no writes where nothing differs"
    );
    // The gateway, the reconcilers and the autoscaler share one watch of each kind.
    let of_the_replica = requests_of(offset, &format!("{lease}-replica"));
    for kind in ["tenants", "rooms", "mediapools"] {
        let watches = of_the_replica
            .get(&("watch".to_owned(), kind.to_owned()))
            .copied();
        assert_eq!(watches, Some(1), "one watch of {kind}: {of_the_replica:?}");
    }
}

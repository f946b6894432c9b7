//! The autoscaler end to end: a real operator process, a real API server whose
//! kube-controller-manager turns the pool's Deployment into pods, and a real media-node process
//! for every pod.
//!
//! No kubelet or container runtime runs here, so the test plays the kubelet for the pool's pods
//! (a mock of that one part, `support::kubelet::Kubelet`): it starts a `treffpunkt media-node`
//! process named after each new pod, reports the pod Running and Ready once the node answers
//! its readiness probe, starts a node again that exited, and for a pod being deleted stops its
//! node with SIGTERM and removes the pod.
//! Participants are Rust WebRTC clients with real media on loopback.
//!
//! The pool takes 8 participants a node and aims at 90 %. Eight participants on its one node
//! make it grow to two; a second call lands on the new node; when most of the first call
//! leaves, the pool drains the less loaded node, whose call moves to the other and keeps
//! receiving, and shrinks to one. The control plane is stopped the moment it decided the drain
//! and started again: the call's move and the drain end as they would have.

mod support;

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::kubelet::{Kubelet, WAIT, decided, host, join, runs};
use support::resources::{ready_tenant, tenant_spec};
use support::{OperatorProcess, PLATFORM, admin, ensure_namespace, eventually, grant_key, unique};
use treffpunkt_client::{Kind, Participant};
use treffpunkt_operator::crd::MediaPool;

/// The longest time within `window` that `receiver` got no video of `source`.
async fn longest_gap(receiver: &Participant, source: &Participant, window: Duration) -> Duration {
    let packets = || receiver.stats(&source.id, Kind::Video).packets;
    let (started, mut last, mut seen, mut longest) =
        (Instant::now(), Instant::now(), packets(), Duration::ZERO);
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = packets();
        if now > seen {
            seen = now;
            last = Instant::now();
        }
        longest = longest.max(last.elapsed());
    }
    longest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_with_its_load_and_drains_a_node_before_it_shrinks() {
    let client = admin().await;
    ensure_namespace(&client, PLATFORM).await;
    let timing = [
        ("TREFFPUNKT_SCALE_OUT_AFTER", "3"),
        ("TREFFPUNKT_SCALE_IN_AFTER", "5"),
    ];
    let mut operator = OperatorProcess::start_with("skalierer", &unique("lease"), &timing);
    assert!(operator.serving().await);
    let (tenant, pool) = (unique("stadt"), unique("wachsend"));
    let mut spec = tenant_spec(None, 10);
    spec.policy.adhoc_rooms = true;
    spec.media_pools = vec![pool.clone()];
    ready_tenant(&client, &tenant, spec).await;
    let pool_spec = json!({
        "replicas": {"min": 1, "max": 2},
        "targetLoadPercent": 90,
        "template": {"image": "treffpunkt/media-node:test", "maxParticipants": 8},
    });
    let mut object = MediaPool::new(&pool, serde_json::from_value(pool_spec).unwrap());
    object.metadata.namespace = Some(PLATFORM.to_owned());
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let key = grant_key(&client).await;
    let control_plane = format!("http://{}", operator.grpc);
    let kubelet = Kubelet::start(client.clone(), pool.clone(), control_plane, key);
    assert!(
        runs(&client, &pool, 1).await,
        "the pool starts with its minimum"
    );

    // Eight in the council's hall: the one node is full, above 90 %.
    let mut hall = Vec::new();
    for index in 0..8 {
        let name = if index == 0 {
            "Sprecher".to_owned()
        } else {
            format!("Gast {index}")
        };
        hall.push(join(&operator, &tenant, "saal", &name).await);
    }
    let out = decided(&client, &pool, "ScaledOut")
        .await
        .expect("the pool grows");
    assert_eq!(out.replicas, 2);
    assert!(
        out.reason.contains("above the target of 90 %"),
        "{}",
        out.reason
    );
    assert!(runs(&client, &pool, 2).await, "two nodes run");
    assert_eq!(kubelet.node_names().len(), 2);

    // A second call lands on the new node.
    let speaker = join(&operator, &tenant, "klein", "Sprecherin").await;
    let listener = join(&operator, &tenant, "klein", "Zuhörer").await;
    let first = host(&client, &tenant, "saal")
        .await
        .expect("the hall's node");
    let second = host(&client, &tenant, "klein")
        .await
        .expect("the small room's node");
    assert_ne!(first, second, "the new call goes to the less loaded node");
    assert!(
        longest_gap(&listener, &speaker, Duration::from_secs(2)).await < Duration::from_secs(1)
    );

    // Five leave the hall: three and two would fit one node. The less loaded node drains.
    for guest in hall.drain(3..) {
        guest.leave().await;
    }
    let watching = tokio::spawn(async move {
        let gap = longest_gap(&listener, &speaker, Duration::from_secs(45)).await;
        (gap, listener, speaker)
    });
    let drain = decided(&client, &pool, "Draining")
        .await
        .expect("a node drains");
    assert!(drain.reason.contains("would carry it"), "{}", drain.reason);
    // The control plane restarts the moment it decided the drain, while the call moves: the
    // new leader finishes the drain it finds in the pool's status, and a move cut short is
    // completed when the clients resume.
    operator.restart();
    assert!(operator.serving().await);
    let moved = eventually(WAIT, || async {
        (host(&client, &tenant, "klein").await? == first).then_some(())
    })
    .await;
    assert!(moved.is_some(), "the small room moved to the first node");
    let scaled_in = decided(&client, &pool, "ScaledIn")
        .await
        .expect("the pool shrinks");
    assert!(scaled_in.reason.contains(&second), "{}", scaled_in.reason);
    assert!(runs(&client, &pool, 1).await, "one node runs");
    let only_first = eventually(WAIT, || async {
        (kubelet.node_names() == [first.clone()]).then_some(())
    })
    .await;
    let left = kubelet.node_names();
    assert!(
        only_first.is_some(),
        "the drained node's pod went: {left:?}"
    );
    let (gap, listener, speaker) = watching.await.unwrap();
    eprintln!("the moved call's longest gap: {gap:?}");
    assert!(
        gap < Duration::from_secs(3),
        "the moved call kept receiving: longest gap {gap:?}"
    );
    assert_eq!(
        host(&client, &tenant, "klein").await.as_deref(),
        Some(first.as_str())
    );
    assert!(
        longest_gap(&listener, &speaker, Duration::from_secs(2)).await < Duration::from_secs(1)
    );
}

//! The autoscaler end to end: a real operator process, a real API server whose
//! kube-controller-manager turns the pool's Deployment into pods and whose kube-scheduler binds
//! them to Kubernetes Nodes, and a real media-node process for every pod bound.
//!
//! No kubelet or container runtime runs here, so the test registers the Nodes and plays the
//! kubelet for the pods bound to them (a mock of that one part, `support::kubelet::Kubelet`): it
//! starts a `treffpunkt media-node` process named after each pod, reports the pod Running and
//! Ready once the node answers its readiness probe, starts a node again that exited, and for a
//! pod being deleted stops its node with SIGTERM and removes the pod.
//! The hall's participants are Rust WebRTC clients with real media on loopback; the second call
//! is two pages in headless Chromium with a fake camera and microphone ([`support::browser`]).
//!
//! The pool takes 8 participants a node and aims at 90 %. Eight participants on its one node
//! make it grow to two, but its one Kubernetes node has no room for a second media node (one per
//! Kubernetes node): the pool says so. A second Kubernetes node arrives (as from a cluster
//! autoscaler) and the new media node runs there; a second call, in the browser, lands on it;
//! when most of the first call leaves, the pool drains the less loaded node, whose call moves to
//! the other and never stops decoding for 3 s in either page, and shrinks to one. The control
//! plane is stopped the moment it decided the drain and started again: the call's move and the
//! drain end as they would have. A pool that outgrew its cluster while its load falls again
//! gives the waiting node back without a drain.

mod support;

use kube::Client;
use support::browser::BrowserCall;
use support::kubelet::{Kubelet, WAIT, create_pool, decided, host, join, pool_event, runs};
use support::logs::process_log_excerpt;
use support::resources::{ready_tenant, tenant_spec};
use support::{OperatorProcess, PLATFORM, admin, ensure_namespace, eventually, grant_key, unique};

/// The operator (the autoscaler waits 3 s to scale out, 5 s to scale in), a tenant whose ad-hoc
/// rooms use a new pool of one to `max` media nodes of `capacity`, and the kubelet of `hosts`
/// Kubernetes Nodes for it; once the pool runs its one node.
///
/// The tests take turns: two operators leading in one platform namespace (each with its own
/// Lease) would both manage every pool there.
async fn scene(
    hosts: usize,
    max: i32,
    capacity: usize,
) -> (Turn, Client, OperatorProcess, Kubelet, String, String) {
    static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let turn = TURNS.lock().await;
    let client = admin().await;
    ensure_namespace(&client, PLATFORM).await;
    let timing = [
        ("TREFFPUNKT_SCALE_OUT_AFTER", "3"),
        ("TREFFPUNKT_SCALE_IN_AFTER", "5"),
    ];
    let operator = OperatorProcess::start_with(&unique("skalierer"), &unique("lease"), &timing);
    assert!(operator.serving().await);
    let (tenant, pool) = (unique("stadt"), unique("wachsend"));
    let mut spec = tenant_spec(None, 10);
    spec.policy.adhoc_rooms = true;
    spec.media_pools = vec![pool.clone()];
    ready_tenant(&client, &tenant, spec).await;
    create_pool(&client, &pool, max, capacity).await;
    let key = grant_key(&client).await;
    let control_plane = format!("http://{}", operator.grpc);
    let kubelet = Kubelet::start(client.clone(), pool.clone(), control_plane, key, hosts).await;
    assert!(
        runs(&client, &pool, 1).await,
        "the pool starts with its minimum"
    );
    (turn, client, operator, kubelet, tenant, pool)
}

/// What the processes log about a call that moves: the attachments of nodes, drains, resumes,
/// moves and the autoscaler's decisions.
const MOVES: &[&str] = &[
    "attach",
    "drain",
    "resum",
    "moved",
    "autoscaler",
    "serving",
    "leading",
    "session",
];

/// A test's turn with the platform namespace.
type Turn = tokio::sync::MutexGuard<'static, ()>;

/// The pod of the pool that the scheduler placed nowhere, once there is one.
async fn waiting_pod(kubelet: &Kubelet) -> Option<String> {
    eventually(WAIT, || async {
        let placement = kubelet.placement().await;
        placement
            .into_iter()
            .find_map(|(pod, host)| host.is_none().then_some(pod))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_with_its_load_and_drains_a_node_before_it_shrinks() {
    let (_turn, client, mut operator, kubelet, tenant, pool) = scene(1, 2, 8).await;

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
    // One media node a Kubernetes node: the second waits for room, and the pool says why.
    let waiting = waiting_pod(&kubelet).await.expect("the new pod waits");
    let note = pool_event(&client, &pool, "NoRoom")
        .await
        .expect("the pool says that its new node found no room");
    assert!(
        note.contains(&waiting) && note.contains("didn't have free ports"),
        "{note}"
    );
    // A second Kubernetes node arrives, as a cluster autoscaler brings one.
    kubelet.add_host().await;
    assert!(runs(&client, &pool, 2).await, "two nodes run");
    assert_eq!(kubelet.node_names().len(), 2);
    let placement = kubelet.placement().await;
    let mut hosts: Vec<_> = placement
        .iter()
        .filter_map(|(_, host)| host.clone())
        .collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(
        hosts.len(),
        2,
        "a media node on each Kubernetes node: {placement:?}"
    );

    // A second call, of two browser pages, lands on the new node.
    let room = format!("http://{}/{tenant}/klein", operator.http);
    let mut pages = BrowserCall::join(&room, &["Anna", "Ben"]).await;
    let first = host(&client, &tenant, "saal")
        .await
        .expect("the hall's node");
    let second = host(&client, &tenant, "klein")
        .await
        .expect("the small room's node");
    assert_ne!(first, second, "the new call goes to the less loaded node");

    // Five leave the hall: three and two would fit one node. The less loaded node drains.
    for guest in hall.drain(3..) {
        guest.leave().await;
    }
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
    // Since the pages decoded each other, through the drain, the restart and the move (measured
    // 0.4-1.6 s without a new frame).
    let watched = pages.watched().await;
    eprintln!("the moved call's pages: {watched:?}");
    assert!(
        watched.longest.iter().all(|ms| *ms < 3000),
        "no page went without new video for 3 s: {watched:?}\nwhat the processes logged of it:\n{}",
        process_log_excerpt(MOVES, 80)
    );
    assert!(
        watched.frames.iter().all(|frames| *frames > 0) && watched.decoding.iter().all(|d| *d),
        "both pages decode video and hear audio after the move: {watched:?}"
    );
    assert_eq!(
        host(&client, &tenant, "klein").await.as_deref(),
        Some(first.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_outgrew_its_cluster_gives_the_waiting_node_back_when_its_load_falls() {
    // Two participants a node: two make the pool grow, one alone does not need a second node.
    let (_turn, client, operator, kubelet, tenant, pool) = scene(1, 2, 2).await;
    let speaker = join(&operator, &tenant, "verein", "Sprecher").await;
    let guest = join(&operator, &tenant, "verein", "Gast").await;
    let home = host(&client, &tenant, "verein")
        .await
        .expect("the room's node");
    let out = decided(&client, &pool, "ScaledOut")
        .await
        .expect("the pool grows");
    assert_eq!(out.replicas, 2);
    let waiting = waiting_pod(&kubelet).await.expect("the new pod waits");
    assert!(pool_event(&client, &pool, "NoRoom").await.is_some());

    guest.leave().await;
    let back = decided(&client, &pool, "ScaledIn")
        .await
        .expect("the pool gives the waiting node back");
    assert_eq!(back.replicas, 1);
    assert!(back.reason.contains("found no room"), "{}", back.reason);
    assert!(runs(&client, &pool, 1).await, "one node runs");
    let gone = eventually(WAIT, || async {
        let pods = kubelet.placement().await;
        (pods.len() == 1
            && pods
                .iter()
                .all(|(pod, host)| pod != &waiting && host.is_some()))
        .then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the waiting pod went, the running one stayed"
    );
    // Nobody was drained or moved: the room stays on the node that ran from the start.
    assert_eq!(kubelet.node_names(), std::slice::from_ref(&home));
    assert_eq!(host(&client, &tenant, "verein").await, Some(home));
    speaker.leave().await;
}

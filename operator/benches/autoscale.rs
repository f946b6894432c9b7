//! How fast a MediaPool scales out and in, and how long a drain takes per session it moves.
//!
//! Runs against the real API server and kube-controller-manager of `deploy/testenv`, with the
//! operator as its own process and a real media-node process per pod; the kubelet's part is
//! played by `support::kubelet` (no kubelet or container runtime runs here, so the times from a
//! new pod to its node being ready leave out scheduling and the image pull of a real cluster).
//! Participants are Rust WebRTC clients with real media on loopback.
//!
//! The pool takes `--capacity` participants a node (default 20) and aims at 90 %. A full node
//! makes it grow to two; a second call of `--moved` participants (default 6) lands on the new
//! node; the first call shrinks to one more than that, so that one node would carry both, and
//! the pool drains the less loaded node, the second call's, and shrinks. Measured: from the load to the decision (which
//! includes the configured wait, `--after`, default 5 s), from the decision to the new node
//! ready, from the drain's start until the node is empty (and that per session it moved), from
//! the drain's end to the pool being one node again, and the longest gap in the moved call's
//! video. As a baseline in the same run: how long a fresh join takes to its first video.
//!
//! `cargo bench -p treffpunkt-operator --bench autoscale` (`-- --capacity 20 --moved 6
//! --after 5`).

#[path = "../tests/support/mod.rs"]
mod support;

use support::argument;

use std::time::{Duration, Instant};

use kube::Api;
use support::kubelet::{Kubelet, create_pool, host, join, runs};
use support::resources::{ready_tenant, tenant_spec};
use support::{OperatorProcess, PLATFORM, admin, ensure_namespace, grant_key, http};
use treffpunkt_client::{Kind, Participant};
use treffpunkt_operator::crd::MediaPool;

/// The pool's last scaling decision.
async fn last_decision(client: &kube::Client, pool: &str) -> Option<String> {
    let pool = Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .get(pool)
        .await
        .ok()?;
    Some(pool.status?.last_scale?.decision)
}

/// The sessions a node holds, from its metrics.
async fn sessions(health: std::net::SocketAddr) -> Option<u64> {
    let (_, text) = http(health, "GET", "/metrics").await?;
    text.lines()
        .find_map(|line| line.strip_prefix("treffpunkt_node_sessions "))
        .and_then(|value| value.trim().parse().ok())
}

/// How long since `since` until `done` holds, looking every 50 ms for up to 3 minutes.
async fn until<F, Fut>(since: Instant, mut done: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while since.elapsed() < Duration::from_secs(180) {
        if done().await {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn seconds(duration: Option<Duration>) -> serde_json::Value {
    duration.map_or(serde_json::Value::Null, |d| d.as_secs_f64().into())
}

/// The operator, a tenant and a pool of one node of `capacity`, with the autoscaler's waits
/// `after` seconds; and the kubelet's part for the pool's pods.
async fn setup(
    capacity: usize,
    after: &str,
) -> (kube::Client, OperatorProcess, Kubelet, String, String) {
    let client = admin().await;
    ensure_namespace(&client, PLATFORM).await;
    let timing = [
        ("TREFFPUNKT_SCALE_OUT_AFTER", after),
        ("TREFFPUNKT_SCALE_IN_AFTER", after),
        ("RUST_LOG", "error"),
        // Every participant comes from loopback, one address: its limits would refuse them.
        ("TREFFPUNKT_MAX_WEBSOCKETS_PER_ADDRESS", "1000"),
        ("TREFFPUNKT_MAX_CONNECTIONS_PER_ADDRESS", "1000"),
        ("TREFFPUNKT_MAX_JOINS_PER_MINUTE", "1000"),
    ];
    let lease = support::unique("lease");
    let operator = OperatorProcess::start_with("skalierer", &lease, &timing);
    assert!(operator.serving().await, "the operator serves");
    let (tenant, pool) = (support::unique("stadt"), support::unique("bench"));
    let mut spec = tenant_spec(None, 10);
    spec.policy.adhoc_rooms = true;
    spec.media_pools = vec![pool.clone()];
    ready_tenant(&client, &tenant, spec).await;
    create_pool(&client, &pool, 2, capacity).await;
    let key = grant_key(&client).await;
    let control_plane = format!("http://{}", operator.grpc);
    let kubelet = Kubelet::start(client.clone(), pool.clone(), control_plane, key, 2).await;
    assert!(runs(&client, &pool, 1).await, "the pool starts");
    (client, operator, kubelet, tenant, pool)
}

/// The second call: a speaker, a listener (whose time to the first video is the baseline),
/// and guests up to `moved` participants.
async fn second_call(
    operator: &OperatorProcess,
    tenant: &str,
    moved: usize,
) -> (Participant, Participant, Vec<Participant>, Option<Duration>) {
    let speaker = join(operator, tenant, "klein", "Sprecherin").await;
    let joining = Instant::now();
    let listener = join(operator, tenant, "klein", "Zuhörer").await;
    let first_video = until(joining, || async {
        listener.stats(&speaker.id, Kind::Video).first_at.is_some()
    })
    .await;
    let mut others = Vec::new();
    for index in 2..moved {
        others.push(join(operator, tenant, "klein", &format!("Gast {index}")).await);
    }
    (speaker, listener, others, first_video)
}

fn main() {
    let capacity = argument("--capacity", 20);
    let moved = argument("--moved", 6).max(2);
    // Both calls together must fit one node under three quarters of the target.
    assert!(
        (2 * moved + 1) * 100 < capacity * 90 * 3 / 4,
        "--moved {moved} is too many for --capacity {capacity} to scale in"
    );
    let after = argument("--after", 5).to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (client, operator, kubelet, tenant, pool) = setup(capacity, &after).await;

        // The first node fills up.
        let mut hall = Vec::new();
        for index in 0..capacity {
            let name = match index {
                0 => "Sprecher".to_owned(),
                _ => format!("Gast {index}"),
            };
            hall.push(join(&operator, &tenant, "saal", &name).await);
        }
        let loaded = Instant::now();
        let out_decided = until(loaded, || async {
            last_decision(&client, &pool).await.as_deref() == Some("ScaledOut")
        })
        .await;
        let out_at = Instant::now();
        let out_ready = until(out_at, || async {
            support::kubelet::deployment(&client, &pool).await == Some((2, 2))
        })
        .await;
        eprintln!("scaled out: decided after {out_decided:?}, ready after {out_ready:?}");

        // The second call lands on the new node; a fresh join's first video is the baseline.
        let (speaker, listener, others, first_video) = second_call(&operator, &tenant, moved).await;
        let small = host(&client, &tenant, "klein").await.expect("a node");
        let drained_node = kubelet.node_names().into_iter().find(|n| *n == small);

        // The hall shrinks to one more than the small call: one node would carry both, and the
        // less loaded node, the small call's, drains.
        for guest in hall.drain(moved + 1..) {
            guest.leave().await;
        }
        let dropped = Instant::now();
        let gap_watch = {
            let before = listener.stats(&speaker.id, Kind::Video);
            (before.packets, before.longest_gap)
        };
        let draining = until(dropped, || async {
            last_decision(&client, &pool).await.as_deref() == Some("Draining")
        })
        .await;
        eprintln!("draining after {draining:?}");
        let drain_started = Instant::now();
        let status = Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
            .get(&pool)
            .await
            .ok()
            .and_then(|p| p.status);
        let node = status.and_then(|s| s.draining_node).expect("a node drains");
        let health = kubelet.health_of(&node).expect("the draining node runs");
        let on_it = if drained_node.as_deref() == Some(node.as_str()) {
            moved
        } else {
            moved + 1
        };
        let drain = until(drain_started, || async {
            sessions(health).await == Some(0)
        })
        .await;
        let drained = Instant::now();
        let scaled_in = until(drained, || async {
            last_decision(&client, &pool).await.as_deref() == Some("ScaledIn")
        })
        .await;
        let one_node = until(drained, || async {
            support::kubelet::deployment(&client, &pool).await == Some((1, 1))
                && kubelet.node_names().len() == 1
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after_stats = listener.stats(&speaker.id, Kind::Video);
        let moved_gap = (after_stats.packets > gap_watch.0).then_some(after_stats.longest_gap);

        let report = serde_json::json!({
            "capacity": capacity,
            "configured_wait_seconds": after.parse::<f64>().unwrap_or(0.0),
            "scale_out": {
                "load_to_decision": seconds(out_decided),
                "decision_to_new_node_ready": seconds(out_ready),
            },
            "scale_in": {
                "load_drop_to_drain_decision": seconds(draining),
                "sessions_moved": on_it,
                "drain": seconds(drain),
                "drain_per_session": seconds(drain.map(|d| d / on_it as u32)),
                "drained_to_scaled_in_decision": seconds(scaled_in),
                "drained_to_one_node": seconds(one_node),
            },
            "video": {
                "fresh_join_to_first_video_baseline": seconds(first_video),
                "longest_gap_in_the_watched_call": seconds(moved_gap),
                "the_watched_call_moved": drained_node.as_deref() == Some(node.as_str()),
            },
        });
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
        for participant in hall.into_iter().chain(others) {
            participant.leave().await;
        }
        speaker.leave().await;
        listener.leave().await;
        drop(kubelet);
    });
}

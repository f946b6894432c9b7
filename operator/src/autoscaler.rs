//! The autoscaler: every few seconds the leader looks at each MediaPool in the cluster and the
//! load its nodes report over Attach, and decides ([`crate::domain::autoscale`]) how many
//! nodes it runs.
//!
//! A decision goes into the pool's status (`desiredReplicas`, `drainingNode`, `lastScale`,
//! written by a field manager of its own) with an event that says why; the pool's reconciler
//! turns `desiredReplicas` into the Deployment's replicas. Scaling in drains a node first: it
//! takes no new rooms and its participants move to the other nodes; its pod is marked with
//! the lowest `controller.kubernetes.io/pod-deletion-cost` (by every replica that hears the node
//! drain), so that lowering the replicas, once the node is empty, removes exactly that pod.
//! The node being drained is in the status, so a leader that takes over (after a restart)
//! finishes the drain it did not start; while the leader is new, a draining node that has not
//! attached to it yet is waited for rather than taken for gone. External pools run no pods and
//! are not scaled.
//!
//! A pool that runs fewer nodes than it should has its pods read (every 15 s, only then): a pod
//! the scheduler found no Kubernetes node for is told of once, as a `NoRoom` warning on the pool
//! with the scheduler's reason. Such pods wait while the load needs them (a cluster autoscaler
//! may add a Kubernetes node for them) and are given back, without a drain, once it does not.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::crd::{MediaPool, ScaleRecord};
use crate::domain::NodeId;
use crate::domain::autoscale::{Decision, Memory, NodeLoad, Policy, awaits_draining_node, decide};
use crate::reconcile::{Context, POOL_LABEL, desired_replicas};

/// How often the pools are looked at.
const TICK: Duration = Duration::from_secs(5);
/// The field manager of the autoscaler's part of a pool's status.
const MANAGER: &str = "treffpunkt-autoscaler";
/// How long a drained node's participants have to move before the node closes what is left.
const DRAIN_GRACE: Duration = Duration::from_secs(300);
/// How often a pool that runs fewer nodes than it should has its pods read again.
const PODS_EVERY: Duration = Duration::from_secs(15);

/// How long the load must stay high before a pool grows, and low before it shrinks.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Above the target this long: scale out.
    pub out_after: Duration,
    /// Low enough this long: drain a node.
    pub in_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            out_after: Duration::from_secs(60),
            in_after: Duration::from_secs(300),
        }
    }
}

/// What the loop keeps of a pool between its looks.
#[derive(Default)]
struct Kept {
    /// Since when its load has been high or low.
    memory: Memory,
    /// Its pods that the scheduler found no room for and that the pool's events told of.
    told: HashSet<String>,
    /// When its pods were last read, and how many of them found no room then.
    unplaced: Option<(Instant, i32)>,
}

/// Scales the platform namespace's pools until aborted (the leader runs it while it leads).
pub async fn run(ctx: Arc<Context>, timing: Timing) {
    let api = Api::<MediaPool>::namespaced(ctx.client.clone(), &ctx.settings.platform_namespace);
    // The replica's cache of pools, in every namespace; `look` takes the platform's.
    let pools = ctx.watches.pools.store();
    let mut kept: HashMap<String, Kept> = HashMap::new();
    let leading_since = Timestamp::now();
    loop {
        tokio::time::sleep(TICK).await;
        look(&ctx, &api, &pools, &mut kept, timing, leading_since).await;
    }
}

async fn look(
    ctx: &Context,
    api: &Api<MediaPool>,
    pools: &Store<MediaPool>,
    kept: &mut HashMap<String, Kept>,
    timing: Timing,
    leading_since: Timestamp,
) {
    let now = Instant::now();
    let mut seen = Vec::new();
    let namespace = Some(ctx.settings.platform_namespace.as_str());
    for pool in pools.state() {
        let name = pool.name_any();
        if pool.spec.external
            || pool.metadata.deletion_timestamp.is_some()
            || pool.metadata.namespace.as_deref() != namespace
        {
            continue;
        }
        let Kept {
            memory,
            told,
            unplaced: last,
        } = kept.entry(name.clone()).or_default();
        seen.push(name);
        let replicas = desired_replicas(&pool);
        let status = pool.status.clone().unwrap_or_default();
        let draining = status.draining_node.clone().map(NodeId);
        let nodes = loads(ctx, &pool.name_any());
        // A drain decided by a leader that went down before its word reached the node: asked
        // again (a node already draining takes it as the same drain).
        if let Some(node) = &draining
            && nodes.iter().any(|n| n.id == *node && !n.draining)
            && let Err(error) = ctx.fleet.drain(node, true, DRAIN_GRACE, true)
        {
            warn!(pool = %pool.name_any(), %node, %error, "could not ask the node to drain");
        }
        let desired = status.desired_replicas.unwrap_or(replicas);
        // Pods are read only while the pool runs fewer nodes than it should, every 15 s.
        let active = nodes.iter().filter(|n| !n.draining).count();
        let unplaced = match *last {
            _ if active as i32 >= desired => {
                (*last, *told) = (None, HashSet::new());
                0
            }
            Some((when, count)) if now.duration_since(when) < PODS_EVERY => count,
            _ => match without_room(ctx, &pool, told, leading_since).await {
                Ok(count) => {
                    *last = Some((now, count));
                    count
                }
                Err(error) => {
                    warn!(pool = %pool.name_any(), %error, "could not read the pool's pods");
                    continue;
                }
            },
        };
        if awaits_draining_node(draining.as_ref(), &nodes, ctx.fleet.is_new()) {
            debug!(pool = %pool.name_any(), ?draining, "the draining node has not attached yet");
            continue;
        }
        debug!(pool = %pool.name_any(), replicas, ?nodes, ?draining, unplaced, "autoscaler looks");
        let decision = decide(
            &policy(&pool, timing),
            desired,
            &nodes,
            draining.as_ref(),
            unplaced,
            memory,
            now,
        );
        if let Err(error) = act(ctx, api, &pool, decision).await {
            warn!(pool = %pool.name_any(), %error, "the autoscaler could not act");
        }
    }
    kept.retain(|name, _| seen.contains(name));
}

/// How many of `pool`'s pods the scheduler found no room for. Each such pod is told of once, as a
/// warning on the pool with the scheduler's reason (`told` remembers which were); a leader that
/// took over leaves untold the pods the scheduler had turned away before it led (its predecessor
/// told of them), so that it writes nothing where nothing changed.
async fn without_room(
    ctx: &Context,
    pool: &MediaPool,
    told: &mut HashSet<String>,
    leading_since: Timestamp,
) -> kube::Result<i32> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.settings.platform_namespace);
    let selector = format!("{POOL_LABEL}={}", pool.name_any());
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    let mut count = 0;
    for pod in &list.items {
        let Some((reason, since)) = unschedulable(pod) else {
            continue;
        };
        count += 1;
        if told.insert(pod.name_any()) && since.is_none_or(|since| since >= leading_since) {
            let note = format!(
                "media node {} found no room in the cluster: {reason}",
                pod.name_any()
            );
            warn!(pool = %pool.name_any(), "{note}");
            ctx.event(&pool.object_ref(&()), true, "NoRoom", note).await;
        }
    }
    Ok(count)
}

/// What the scheduler said of `pod`, and since when, if it found no Kubernetes node for it.
fn unschedulable(pod: &Pod) -> Option<(String, Option<Timestamp>)> {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
        || pod.metadata.deletion_timestamp.is_some()
    {
        return None;
    }
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    (condition.status == "False" && condition.reason.as_deref() == Some("Unschedulable")).then(
        || {
            let message = condition.message.clone().unwrap_or_default();
            (
                message,
                condition.last_transition_time.as_ref().map(|t| t.0),
            )
        },
    )
}

/// What the nodes of `pool` report.
fn loads(ctx: &Context, pool: &str) -> Vec<NodeLoad> {
    ctx.fleet
        .nodes()
        .into_iter()
        .filter(|node| node.pool == pool)
        .map(|node| NodeLoad {
            cpu_millicores: ctx.fleet.load(&node.id).map_or(0, |l| l.cpu_millicores),
            id: node.id,
            participants: node.participants,
            max_participants: node.max_participants,
            draining: node.draining,
        })
        .collect()
}

fn policy(pool: &MediaPool, timing: Timing) -> Policy {
    let cpu = pool
        .spec
        .template
        .as_ref()
        .and_then(|t| t.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|requests| requests.get("cpu"))
        .and_then(|quantity| millicores(&quantity.0));
    Policy {
        min: pool.spec.replicas.min,
        max: pool.spec.replicas.max,
        target_percent: u32::try_from(pool.spec.target_load_percent).unwrap_or(70),
        cpu_request_millicores: cpu,
        out_after: timing.out_after,
        in_after: timing.in_after,
    }
}

/// A CPU quantity (`1`, `0.5`, `500m`) in millicores.
fn millicores(quantity: &str) -> Option<u32> {
    let value = match quantity.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()?,
        None => quantity.parse::<f64>().ok()? * 1000.0,
    };
    (value.is_finite() && value > 0.0 && value < f64::from(u32::MAX)).then_some(value as u32)
}

async fn act(
    ctx: &Context,
    api: &Api<MediaPool>,
    pool: &MediaPool,
    decision: Decision,
) -> kube::Result<()> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ctx.settings.platform_namespace);
    let (label, replicas, draining, why) = match decision {
        Decision::Hold => return Ok(()),
        Decision::Out { to, why } => ("ScaledOut", to, None, why),
        Decision::In { to, why } => {
            // Exactly the drained node's pod goes, whoever marked it before.
            if let Some(node) = pool.status.as_ref().and_then(|s| s.draining_node.as_ref()) {
                match crate::cluster::mark_to_go_first(&pods, node, &pool.name_any()).await {
                    Ok(()) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error),
                }
            }
            ("ScaledIn", to, None, why)
        }
        // The node is asked once the status names it (below): a drain the status does not
        // record would leave the pool holding an idle node that nothing finishes.
        Decision::Drain { node, why } => ("Draining", desired_replicas(pool), Some(node.0), why),
    };
    info!(pool = %pool.name_any(), decision = label, replicas, %why, "autoscaler");
    let record = ScaleRecord {
        time: Time(Timestamp::now()),
        decision: label.to_owned(),
        replicas,
        reason: why.clone(),
    };
    let mut status = json!({
        "desiredReplicas": replicas,
        "lastScale": record,
    });
    if let Some(node) = &draining {
        status["drainingNode"] = json!(node);
    }
    let body = json!({
        "apiVersion": "treffpunkt.io/v1alpha1",
        "kind": "MediaPool",
        "status": status,
    });
    api.patch_status(
        &pool.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    if let Some(node) = &draining
        && let Err(error) = ctx
            .fleet
            .drain(&NodeId(node.clone()), true, DRAIN_GRACE, true)
    {
        // Gone already: the next look finds it drained.
        warn!(pool = %pool.name_any(), %node, %error, "could not ask the node to drain");
    }
    let note = match &draining {
        Some(node) => format!("draining node {node}: {why}"),
        None => format!("{replicas} media nodes: {why}"),
    };
    ctx.event(&pool.object_ref(&()), false, label, note).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::millicores;

    #[test]
    fn cpu_quantities_are_read_in_millicores() {
        assert_eq!(millicores("1"), Some(1000));
        assert_eq!(millicores("0.5"), Some(500));
        assert_eq!(millicores("250m"), Some(250));
        assert_eq!(millicores("2.5"), Some(2500));
        for wrong in ["", "m", "x", "-1", "0", "1e400"] {
            assert_eq!(millicores(wrong), None, "{wrong}");
        }
    }
}

//! The kubelet's part for a MediaPool's pods, played by a test or a benchmark (no kubelet or
//! container runtime runs here).
//!
//! It registers Kubernetes Nodes of a site of its own (label [`SITE_LABEL`]; a pool reaches
//! them with that node selector), which the test environment's real kube-scheduler binds the
//! pool's pods to, by the pods' rules (one media node per Kubernetes node, host ports, node
//! selector). For each pod bound to one of its Nodes it starts a `treffpunkt media-node`
//! process named after the pod (as `POD_NAME` names a node in the cluster) with the pod's
//! capacity, reports the pod Running and Ready once the node answers its readiness probe,
//! starts a node again that exited (restart policy Always), and for a pod being deleted stops
//! its node with SIGTERM (up to 30 s to drain, as a kubelet gives a container) and removes the
//! pod. A pod the scheduler placed nowhere stays Pending. All processes share this machine's
//! loopback, so each node gets ports of its own instead of the pod's host ports. No node
//! lifecycle controller runs: the Nodes need no heartbeats, and their not-ready taint is taken
//! off here; they stay until the test environment ends. Also what the pool's Deployment and
//! status say.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use treffpunkt_operator::crd::{self, MediaPool, Room};
use treffpunkt_operator::reconcile::POOL_LABEL;

use treffpunkt_client::{Participant, Publish, signal_url};

use super::{NodeProcess, OperatorProcess, PLATFORM, eventually, http, pool_credential};

/// How long the pool's changes are waited for.
pub const WAIT: Duration = Duration::from_secs(90);

/// The label of the Kubernetes Nodes a [`Kubelet`] registers: its site.
pub const SITE_LABEL: &str = "treffpunkt.io/test-site";

/// The kubelet's part for the pool's pods.
pub struct Kubelet {
    client: Client,
    site: String,
    nodes: Arc<Mutex<HashMap<String, NodeProcess>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    /// Registers `hosts` Kubernetes Nodes of site `pool` and plays the kubelet for `pool`'s
    /// pods bound to them, attaching their nodes to `control_plane` with the grant `key`.
    pub async fn start(
        client: Client,
        pool: String,
        control_plane: String,
        key: String,
        hosts: usize,
    ) -> Self {
        for _ in 0..hosts {
            register(&client, &pool).await;
        }
        let site = pool.clone();
        let nodes: Arc<Mutex<HashMap<String, NodeProcess>>> = Arc::default();
        let running = nodes.clone();
        let owner = client.clone();
        let task = tokio::spawn(async move {
            let credential = pool_credential(&client, &pool).await;
            let pods = Api::<Pod>::namespaced(client.clone(), PLATFORM);
            let selector = format!("{POOL_LABEL}={pool}");
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await else {
                    continue;
                };
                let names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
                running
                    .lock()
                    .unwrap()
                    .retain(|name, _| names.contains(name));
                for pod in list.items {
                    let name = pod.name_any();
                    let host = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
                    if !host.is_some_and(|host| host.starts_with(&format!("{pool}-host-"))) {
                        // Not placed, or not on this site: nothing runs it here.
                        continue;
                    }
                    if pod.metadata.deletion_timestamp.is_some() {
                        let node = running.lock().unwrap().remove(&name);
                        if let Some(mut node) = node {
                            stop(&mut node.process).await;
                        }
                        let _ = pods
                            .delete(&name, &DeleteParams::default().grace_period(0))
                            .await;
                        continue;
                    }
                    let exited = running
                        .lock()
                        .unwrap()
                        .get_mut(&name)
                        .is_none_or(|node| !matches!(node.process.try_wait(), Ok(None)));
                    if exited {
                        let env = capacity(&pod);
                        let node =
                            NodeProcess::start_with(&name, &control_plane, &key, &credential, &env);
                        running.lock().unwrap().insert(name.clone(), node);
                    }
                    let health = running.lock().unwrap().get(&name).map(|n| n.health);
                    let ready = match health {
                        Some(health) => http(health, "GET", "/readyz")
                            .await
                            .is_some_and(|(status, _)| status == 200),
                        None => false,
                    };
                    report(&pods, &pod, ready).await;
                }
            }
        });
        Self {
            client: owner,
            site,
            nodes,
            task,
        }
    }

    /// Registers one more Kubernetes Node of the site, as a cluster autoscaler would.
    pub async fn add_host(&self) -> String {
        register(&self.client, &self.site).await
    }

    /// Which Kubernetes Node each of the pool's pods is bound to (`None`: not placed), by pod.
    pub async fn placement(&self) -> Vec<(String, Option<String>)> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), PLATFORM);
        let selector = format!("{POOL_LABEL}={}", self.site);
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("the pool's pods are listed");
        list.items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .map(|pod| {
                let host = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                (pod.name_any(), host)
            })
            .collect()
    }

    /// The health endpoint of node `name`, if it runs.
    pub fn health_of(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.nodes.lock().unwrap().get(name).map(|node| node.health)
    }

    /// The ids of the nodes running (`<pool>:<pod>`, as rooms name their nodes).
    pub fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = (self.nodes.lock().unwrap().values())
            .map(|node| node.id.clone())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Registers a Ready Kubernetes Node `<site>-host-<n>` of `site`, with room for a few media
/// nodes' requests, and returns its name.
async fn register(client: &Client, site: &str) -> String {
    let nodes = Api::<Node>::all(client.clone());
    let taken = nodes
        .list(&ListParams::default().labels(&format!("{SITE_LABEL}={site}")))
        .await
        .expect("the site's Nodes are listed")
        .items
        .len();
    let name = format!("{site}-host-{taken}");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
    });
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            SITE_LABEL: site,
        }},
        "status": status,
    }))
    .expect("a Node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("the Node is registered");
    // The API server marks a new Node not ready (a taint) until the node lifecycle controller
    // sees its kubelet report Ready; that controller does not run here, so its part is played
    // too.
    nodes
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": null}})),
        )
        .await
        .expect("the Node is marked ready");
    name
}

/// What the pod's container says of the node's capacity, as its environment.
fn capacity(pod: &Pod) -> Vec<(String, String)> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    containers
        .iter()
        .flat_map(|c| c.env.clone().unwrap_or_default())
        .filter(|var| var.name == "TREFFPUNKT_MAX_PARTICIPANTS")
        .filter_map(|var| Some((var.name, var.value?)))
        .collect()
}

/// SIGTERM, then up to 30 s for the node to drain and end, as the kubelet gives a container.
async fn stop(process: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &process.id().to_string()])
        .status();
    for _ in 0..300 {
        if !matches!(process.try_wait(), Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = process.kill();
}

/// Reports `pod` Running, and Ready if `ready`, as a kubelet would.
async fn report(pods: &Api<Pod>, pod: &Pod, ready: bool) {
    let is = |s: &str| {
        if ready {
            s.replace('?', "True")
        } else {
            s.replace('?', "False")
        }
    };
    let was_ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status == "True");
    if was_ready == Some(ready) {
        return;
    }
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "hostIP": "127.0.0.1",
        "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": is("?"), "lastTransitionTime": now},
            {"type": "Ready", "status": is("?"), "lastTransitionTime": now},
        ],
    }});
    let _ = pods
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await;
}

/// Creates pool `pool` of one to `max` media nodes of `capacity` participants each, aiming at
/// 90 %, whose pods go to the Kubernetes Nodes of site `pool` (see [`Kubelet::start`]).
pub async fn create_pool(client: &Client, pool: &str, max: i32, capacity: usize) {
    let spec = json!({
        "replicas": {"min": 1, "max": max},
        "targetLoadPercent": 90,
        "template": {
            "image": "treffpunkt/media-node:test",
            "maxParticipants": capacity,
            "nodeSelector": {SITE_LABEL: pool},
        },
    });
    let mut object = MediaPool::new(pool, serde_json::from_value(spec).expect("a pool's spec"));
    object.metadata.namespace = Some(PLATFORM.to_owned());
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .create(&PostParams::default(), &object)
        .await
        .expect("the pool is accepted");
}

/// The pool's Deployment's replicas and ready replicas.
pub async fn deployment(client: &Client, pool: &str) -> Option<(i32, i32)> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), PLATFORM)
        .get(&format!("treffpunkt-media-{pool}"))
        .await
        .ok()?;
    let status = deployment.status.unwrap_or_default();
    Some((
        deployment.spec?.replicas.unwrap_or(0),
        status.ready_replicas.unwrap_or(0),
    ))
}

/// Whether the pool's Deployment comes to `nodes` replicas, all ready.
pub async fn runs(client: &Client, pool: &str, nodes: i32) -> bool {
    eventually(WAIT, || async {
        (deployment(client, pool).await? == (nodes, nodes)).then_some(())
    })
    .await
    .is_some()
}

/// The pool's last scaling decision, once it is `decision`.
pub async fn decided(client: &Client, pool: &str, decision: &str) -> Option<crd::ScaleRecord> {
    eventually(WAIT, || async {
        let pool = Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
            .get(pool)
            .await
            .ok()?;
        pool.status?.last_scale.filter(|s| s.decision == decision)
    })
    .await
}

/// The note of the pool's first event with `reason`, once there is one.
pub async fn pool_event(client: &Client, pool: &str, reason: &str) -> Option<String> {
    super::resources::event_note(client, PLATFORM, pool, reason, WAIT).await
}

/// The node that hosts `room` of `tenant`.
pub async fn host(client: &Client, tenant: &str, room: &str) -> Option<String> {
    Api::<Room>::namespaced(client.clone(), &crd::tenant_namespace(tenant))
        .get(room)
        .await
        .ok()?
        .status?
        .node
}

/// `name` joins `room` of `tenant` through `operator`'s gateway, publishing if a "Sprecher".
pub async fn join(operator: &OperatorProcess, tenant: &str, room: &str, name: &str) -> Participant {
    let url = signal_url(operator.http, tenant, room);
    let publish = name.starts_with("Sprecher").then(Publish::default);
    eventually(Duration::from_secs(30), || async {
        Participant::join(&url, name, publish.clone()).await.ok()
    })
    .await
    .unwrap_or_else(|| panic!("{name} joins"))
}

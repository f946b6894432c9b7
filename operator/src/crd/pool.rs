//! `MediaPool`: a fleet of media nodes, in the platform's namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A fleet of media nodes. The operator runs it as a Deployment with one node per Kubernetes
/// node (each node needs its media ports on the host), with a PodDisruptionBudget and a
/// Service, and reports how many nodes are ready.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "treffpunkt.io",
    version = "v1alpha1",
    kind = "MediaPool",
    namespaced,
    status = "MediaPoolStatus",
    shortname = "mp",
    category = "treffpunkt",
    derive = "PartialEq",
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.replicas.min"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.replicas.max"),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.external) && self.external) ? !has(self.template) : has(self.template)").message("a pool in the cluster needs a template; an external pool has none"))]
#[x_kube(validation = Rule::new("!(has(self.external) && self.external) || (has(self.tenants) && size(self.tenants) == 1)").message("an external pool serves exactly one tenant"))]
#[x_kube(validation = Rule::new("(has(self.external) && self.external) == (has(oldSelf.external) && oldSelf.external)").message("external cannot change: make a new pool"))]
pub struct MediaPoolSpec {
    /// How many media nodes run (an external pool: how many must be attached to be Ready).
    #[serde(default)]
    pub replicas: Replicas,
    /// The share of a node's capacity the autoscaler aims for, in percent: the larger of its
    /// participants against `template.maxParticipants` and its CPU against the CPU its pod
    /// asks for. The autoscaler keeps the mean over the pool's nodes near it between
    /// `replicas.min` and `replicas.max`. An external pool is not scaled: for it only
    /// `replicas.min` counts (the nodes that must be attached for Ready), and this, `replicas.max`
    /// and `network` are not used.
    #[serde(default = "default_target_load")]
    #[schemars(range(min = 10, max = 100))]
    pub target_load_percent: i32,
    /// The media node pods; none for an external pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<MediaNodeTemplate>,
    /// The pool's media nodes run outside the cluster, at the site of the one tenant in
    /// `tenants`, which brings them: the operator runs no pods for it, writes their credential
    /// (the Attach port's certificate for this pool, the grant key) into the Secret
    /// `treffpunkt-partner-nodes` of the tenant's namespace for its admins to fetch, and the
    /// nodes host that tenant's rooms only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// How clients reach the nodes. Fixed once the pool exists: calls in progress use these
    /// ports and addresses; for others, make a new pool and move the tenants to it.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("network cannot change under running calls: make a new pool and move the tenants to it"))]
    pub network: PoolNetwork,
    /// The tenants that may use the pool; empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// The networks (CIDR, such as `10.20.0.0/16`) whose participants the pool's nodes are near:
    /// a district's or a partner's site. Someone who joins from one of them is placed on these
    /// nodes first, when the room starts or spreads, and among a room's nodes. Empty: no
    /// preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(regex(pattern = r"^[0-9A-Fa-f.:]+/[0-9]{1,3}$"))
    )]
    pub client_networks: Vec<String>,
}

fn default_target_load() -> i32 {
    70
}

fn default_min_replicas() -> i32 {
    1
}

fn default_max_replicas() -> i32 {
    10
}

/// How many media nodes run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("replicas.min cannot exceed replicas.max"))]
pub struct Replicas {
    /// At least this many.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min: i32,
    /// At most this many.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max: i32,
}

impl Default for Replicas {
    fn default() -> Self {
        Self {
            min: default_min_replicas(),
            max: default_max_replicas(),
        }
    }
}

fn default_max_participants() -> i32 {
    200
}

/// The media node pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaNodeTemplate {
    /// The media node's container image.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// CPU and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Which Kubernetes nodes may run media nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the media nodes tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Participants one media node accepts.
    #[serde(default = "default_max_participants")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_participants: i32,
}

/// How a media node's ports reach the network.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NetworkMode {
    /// The pod's ports are mapped to the same ports on its Kubernetes node.
    #[default]
    HostPort,
    /// The pod uses its Kubernetes node's network directly.
    HostNetwork,
}

fn default_udp_port() -> i32 {
    10000
}

fn default_tcp_port() -> i32 {
    10443
}

/// How clients reach the nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.udpPort != self.tcpPort").message("udpPort and tcpPort must differ"))]
pub struct PoolNetwork {
    /// HostPort or HostNetwork.
    #[serde(default)]
    pub mode: NetworkMode,
    /// The UDP port for media.
    #[serde(default = "default_udp_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub udp_port: i32,
    /// The TCP port for ICE-TCP, the fallback where UDP is blocked.
    #[serde(default = "default_tcp_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub tcp_port: i32,
    /// The address announced to clients; each node's own address when unset (the usual case).
    /// Set it when the Kubernetes nodes sit behind a 1:1 NAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isIP(self)").message("announceAddress must be an IP address"))]
    pub announce_address: Option<String>,
}

impl Default for PoolNetwork {
    fn default() -> Self {
        Self {
            mode: NetworkMode::default(),
            udp_port: default_udp_port(),
            tcp_port: default_tcp_port(),
            announce_address: None,
        }
    }
}

/// What the operator reports about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaPoolStatus {
    /// Media node pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Media node pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: at least the minimum of nodes is ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The nodes the autoscaler decided the pool runs, between `replicas.min` and
    /// `replicas.max`; `replicas.min` until it has decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// The node the autoscaler drains (its participants move to the others) before the pool
    /// shrinks by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_node: Option<String>,
    /// The autoscaler's last decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale: Option<ScaleRecord>,
}

impl MediaPoolStatus {
    /// The status without what the autoscaler writes (it writes that part itself).
    pub fn without_autoscaler(&self) -> Self {
        Self {
            desired_replicas: None,
            draining_node: None,
            last_scale: None,
            ..self.clone()
        }
    }
}

/// A decision of the autoscaler.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleRecord {
    /// When.
    pub time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// `ScaledOut`, `Draining` or `ScaledIn`.
    pub decision: String,
    /// The nodes the pool runs after it.
    pub replicas: i32,
    /// Why, in words.
    pub reason: String,
}

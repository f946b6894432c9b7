//! The MediaPool reconciler: a Deployment of media nodes with a PodDisruptionBudget and a
//! Service, and a status that follows the Deployment.
//!
//! Each media node needs its UDP and TCP ports on its Kubernetes node's address (hostPort, or
//! the host's network), so there is one per Kubernetes node (anti-affinity), and a rolling
//! update replaces nodes one at a time without surge. The announced address comes from the
//! downward API (the node's IP) unless the pool fixes one. The pods run as non-root with a
//! read-only root filesystem and no capabilities, and get no service-account token: a media
//! node never talks to the API server.
//!
//! The Deployment, budget and Service are made for the pool and carry its controller
//! reference; an object of one of their names that the operator did not make for this pool is
//! someone else's, is left alone, and the pool's `Ready` condition says so (`ObjectNotOwned`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    KeyToPath, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::credentials;
use super::ownership::{Claim, apply_owned};
use super::{Context, Error, MANAGED_BY, MANAGER, Result, error_policy};
use crate::crd::{self, MediaNodeTemplate, MediaPool, MediaPoolStatus, NetworkMode, PoolNetwork};
use crate::keys;

const FINALIZER: &str = "mediapools.treffpunkt.io/cleanup";
/// The port of a media node's health endpoint.
pub const HEALTH_PORT: i32 = 9091;
/// The label that names a media node's pool.
pub const POOL_LABEL: &str = "treffpunkt.io/pool";
/// The user media nodes run as.
const NON_ROOT: i64 = 65532;

/// Runs the MediaPool reconciler (for pools in the platform namespace) until `shutdown`
/// completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let namespace = ctx.settings.platform_namespace.clone();
    let managed = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    // The replica watches pools in every namespace; this reconciler takes the platform's.
    let pools = &ctx.watches.pools;
    let ours = namespace.clone();
    let in_platform = move |pool: &Arc<MediaPool>| {
        futures::future::ready(pool.metadata.namespace.as_deref() == Some(ours.as_str()))
    };
    Controller::for_shared_stream(
        pools.everything_then_changes().filter(in_platform),
        pools.store(),
    )
    .owns(
        Api::<Deployment>::namespaced(client.clone(), &namespace),
        managed.clone(),
    )
    .owns(
        Api::<PodDisruptionBudget>::namespaced(client.clone(), &namespace),
        managed.clone(),
    )
    .owns(Api::<Service>::namespaced(client, &namespace), managed)
    .graceful_shutdown_on(shutdown)
    .run(
        reconcile,
        |object, error, ctx| error_policy("mediapool", object.as_ref(), error, &ctx),
        ctx,
    )
    .for_each(|_| futures::future::ready(()))
    .await;
}

async fn reconcile(pool: Arc<MediaPool>, ctx: Arc<Context>) -> Result<Action> {
    let _measure = ctx.metrics.reconcile("mediapool");
    let object = pool.clone();
    let namespace = pool.namespace().ok_or(Error::Incomplete("namespace"))?;
    let api = Api::<MediaPool>::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, pool, |event| async {
        match event {
            Finalizer::Apply(pool) => apply(&pool, &ctx).await,
            // The Deployment, budget and Service are owned by the pool and go with it; its
            // nodes' certificate goes from the keys' Secret.
            Finalizer::Cleanup(pool) => {
                if ctx.authority.is_some() {
                    credentials::forget(&pool, &ctx).await?;
                }
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
    .inspect(|_| ctx.succeeded("mediapool", &*object))
}

/// The name of a pool's Deployment, budget and Service.
pub fn workload_name(pool: &str) -> String {
    format!("treffpunkt-media-{pool}")
}

/// The labels of a pool's pods, which its Deployment and Service select by.
pub fn selector(pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "treffpunkt-media-node".to_owned(),
        ),
        (POOL_LABEL.to_owned(), pool.to_owned()),
    ])
}

fn metadata(name: &str, namespace: &str, pool: &str, owner: &OwnerReference) -> ObjectMeta {
    let mut labels = selector(pool);
    labels.insert(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned());
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(HEALTH_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// What a media node is told through its environment: where to attach, who it is, where to
/// listen and what to announce, where its grant key is, and to log as JSON when the control
/// plane does.
fn node_env(pool: &MediaPool, template: &MediaNodeTemplate, ctx: &Context) -> Vec<EnvVar> {
    let spec = &pool.spec;
    let network = &spec.network;
    let announce = match &network.announce_address {
        Some(address) => env("TREFFPUNKT_ANNOUNCE_IP", address.clone()),
        None => env_from_field("TREFFPUNKT_ANNOUNCE_IP", "status.hostIP"),
    };
    let mut vars = vec![
        env(
            "TREFFPUNKT_CONTROL_PLANE",
            ctx.settings.attach_address.clone(),
        ),
        env_from_field("TREFFPUNKT_NODE_ID", "metadata.name"),
        env("TREFFPUNKT_POOL", pool.name_any()),
        env(
            "TREFFPUNKT_UDP_BIND",
            format!("0.0.0.0:{}", network.udp_port),
        ),
        env(
            "TREFFPUNKT_TCP_BIND",
            format!("0.0.0.0:{}", network.tcp_port),
        ),
        announce,
        env(
            "TREFFPUNKT_MAX_PARTICIPANTS",
            template.max_participants.to_string(),
        ),
        env("TREFFPUNKT_HEALTH_LISTEN", format!("0.0.0.0:{HEALTH_PORT}")),
        env(
            "TREFFPUNKT_GRANT_KEY_FILE",
            format!("{KEYS_DIR}/{}", keys::GRANT_KEY),
        ),
        env(
            "TREFFPUNKT_METRICS_TOKEN_FILE",
            format!("{KEYS_DIR}/{}", keys::METRICS_TOKEN),
        ),
    ];
    if ctx.authority.is_some() {
        vars.push(env("TREFFPUNKT_ATTACH_TLS_DIR", KEYS_DIR));
    }
    if ctx.settings.log_json {
        vars.push(env("TREFFPUNKT_LOG_FORMAT", "json"));
    }
    if let Some(filter) = &ctx.settings.log_filter {
        vars.push(env("RUST_LOG", filter.clone()));
    }
    vars
}

/// The media ports on the Kubernetes node's address (unless the pod has the host's network
/// anyway), and the health port.
pub fn node_ports(network: &PoolNetwork) -> Vec<ContainerPort> {
    let host_network = network.mode == NetworkMode::HostNetwork;
    let host_port = |port: i32| (!host_network).then_some(port);
    vec![
        ContainerPort {
            name: Some("media-udp".to_owned()),
            container_port: network.udp_port,
            host_port: host_port(network.udp_port),
            protocol: Some("UDP".to_owned()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("media-tcp".to_owned()),
            container_port: network.tcp_port,
            host_port: host_port(network.tcp_port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("health".to_owned()),
            container_port: HEALTH_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        },
    ]
}

fn runtime_default_seccomp() -> Option<SeccompProfile> {
    Some(SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    })
}

/// Non-root, a read-only root filesystem, no privilege escalation and no capabilities.
fn node_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NON_ROOT),
        run_as_group: Some(NON_ROOT),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: runtime_default_seccomp(),
        ..SecurityContext::default()
    }
}

/// Where the media node finds the grant key and the token of its `/status` and `/metrics`: fields
/// of the platform's Secret, as files that follow the Secret when it changes (an environment
/// variable would not).
const KEYS_DIR: &str = "/var/run/treffpunkt/keys";

/// The fields of the keys' Secret that a node of `pool` gets: the grant key, the metrics token
/// and, when the Attach port runs mutual TLS, the authority's certificate and the pool's
/// certificate and key.
fn keys_volume(pool: &str, ctx: &Context) -> Volume {
    let item = |key: &str, path: &str| KeyToPath {
        key: key.to_owned(),
        path: path.to_owned(),
        mode: None,
    };
    let mut items = vec![
        item(keys::GRANT_KEY, keys::GRANT_KEY),
        item(keys::METRICS_TOKEN, keys::METRICS_TOKEN),
    ];
    if ctx.authority.is_some() {
        let [cert, key, _] = keys::pool_fields(pool);
        items.push(item(keys::AUTHORITY_CERT, "ca.crt"));
        items.push(item(&cert, "tls.crt"));
        items.push(item(&key, "tls.key"));
    }
    Volume {
        name: "keys".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(ctx.settings.grant_key_secret.clone()),
            items: Some(items),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The media node's container.
fn node_container(pool: &MediaPool, template: &MediaNodeTemplate, ctx: &Context) -> Container {
    Container {
        name: "media-node".to_owned(),
        image: Some(template.image.clone()),
        env: Some(node_env(pool, template, ctx)),
        ports: Some(node_ports(&pool.spec.network)),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        resources: template.resources.clone(),
        security_context: Some(node_security()),
        volume_mounts: Some(vec![VolumeMount {
            name: "keys".to_owned(),
            mount_path: KEYS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// At most one media node of the pool per Kubernetes node: their ports would collide.
fn one_per_host(labels: BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(labels),
                    match_expressions: None,
                }),
                topology_key: "kubernetes.io/hostname".to_owned(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// The pod of a media node: its container, the host's network if the pool asks for it, no
/// service-account token, and a long grace period to drain.
fn node_pod(
    pool: &MediaPool,
    template: &MediaNodeTemplate,
    ctx: &Context,
    labels: BTreeMap<String, String>,
) -> PodSpec {
    let host_network = pool.spec.network.mode == NetworkMode::HostNetwork;
    PodSpec {
        containers: vec![node_container(pool, template, ctx)],
        host_network: host_network.then_some(true),
        dns_policy: host_network.then(|| "ClusterFirstWithHostNet".to_owned()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(300),
        node_selector: template.node_selector.clone(),
        tolerations: template.tolerations.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: runtime_default_seccomp(),
            ..PodSecurityContext::default()
        }),
        affinity: Some(one_per_host(labels)),
        volumes: Some(vec![keys_volume(&pool.name_any(), ctx)]),
        ..PodSpec::default()
    }
}

/// The nodes a pool runs: what the autoscaler decided, within the pool's bounds.
pub fn desired_replicas(pool: &MediaPool) -> i32 {
    let bounds = &pool.spec.replicas;
    pool.status
        .as_ref()
        .and_then(|status| status.desired_replicas)
        .unwrap_or(bounds.min)
        .clamp(bounds.min, bounds.max)
}

/// The Deployment of a pool's media nodes.
pub fn deployment(
    pool: &MediaPool,
    template: &MediaNodeTemplate,
    ctx: &Context,
    owner: &OwnerReference,
) -> Deployment {
    let name = pool.name_any();
    let namespace = pool.namespace().unwrap_or_default();
    let labels = selector(&name);
    Deployment {
        metadata: metadata(&workload_name(&name), &namespace, &name, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(desired_replicas(pool)),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            },
            // A node's ports are taken while it runs: replace nodes one by one, never two on
            // one Kubernetes node.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(node_pod(pool, template, ctx, labels)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The budget that lets one media node of the pool go at a time.
fn budget(pool: &MediaPool, owner: &OwnerReference) -> PodDisruptionBudget {
    let name = pool.name_any();
    let namespace = pool.namespace().unwrap_or_default();
    PodDisruptionBudget {
        metadata: metadata(&workload_name(&name), &namespace, &name, owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&name)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// Headless: it names the media node pods for monitoring; media itself goes to each node's own
/// address, never through a Service.
fn service(pool: &MediaPool, owner: &OwnerReference) -> Service {
    let name = pool.name_any();
    let namespace = pool.namespace().unwrap_or_default();
    Service {
        metadata: metadata(&workload_name(&name), &namespace, &name, owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some("health".to_owned()),
                port: HEALTH_PORT,
                target_port: Some(IntOrString::Int(HEALTH_PORT)),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// What the pool's Deployment reports, and the objects under the names of the pool's workload
/// that are someone else's.
struct Workload {
    observed: DeploymentStatus,
    foreign: Vec<String>,
}

/// Applies the pool's Deployment, budget and Service where the objects of their names are the
/// pool's or missing; someone else's are left alone.
async fn apply_workload(pool: &MediaPool, ctx: &Context, namespace: &str) -> Result<Workload> {
    let template = pool
        .spec
        .template
        .as_ref()
        .ok_or(Error::Incomplete("template"))?;
    let owner = pool
        .controller_owner_ref(&())
        .ok_or(Error::Incomplete("uid"))?;
    let client = &ctx.client;
    let workload = workload_name(&pool.name_any());
    let mut foreign = Vec::new();
    // The budget and the Service first: the budget covers the pods from the start, and whoever
    // sees the Deployment finds them in place.
    let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), namespace);
    if apply_owned(&budgets, &budget(pool, &owner), &owner.uid)
        .await?
        .is_foreign()
    {
        foreign.push(format!("PodDisruptionBudget {workload}"));
    }
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    if apply_owned(&services, &service(pool, &owner), &owner.uid)
        .await?
        .is_foreign()
    {
        foreign.push(format!("Service {workload}"));
    }
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let observed = match apply_owned(
        &deployments,
        &deployment(pool, template, ctx, &owner),
        &owner.uid,
    )
    .await?
    {
        Claim::Ours(deployment) => deployment.status.unwrap_or_default(),
        Claim::Foreign => {
            foreign.push(format!("Deployment {workload}"));
            DeploymentStatus::default()
        }
    };
    Ok(Workload { observed, foreign })
}

/// An external pool's nodes as they attach: its credential for the partner's admins, and as
/// its replicas the nodes attached to this replica.
async fn apply_external(pool: &MediaPool, ctx: &Context) -> Result<Workload> {
    let name = pool.name_any();
    let (Some(authority), [tenant]) = (&ctx.authority, pool.spec.tenants.as_slice()) else {
        return Err(Error::Incomplete("certificate authority or its one tenant"));
    };
    credentials::ensure_partner(&name, tenant, ctx, authority).await?;
    let attached = ctx.fleet.nodes().iter().filter(|n| n.pool == name).count() as i32;
    let observed = DeploymentStatus {
        replicas: Some(attached),
        ready_replicas: Some(attached),
        ..DeploymentStatus::default()
    };
    Ok(Workload {
        observed,
        foreign: Vec::new(),
    })
}

async fn apply(pool: &MediaPool, ctx: &Context) -> Result<Action> {
    let namespace = pool.namespace().ok_or(Error::Incomplete("namespace"))?;
    let Workload { observed, foreign } = if pool.spec.external {
        apply_external(pool, ctx).await?
    } else {
        // The nodes' certificate first: their pods mount it. Looked at again with every
        // reconciliation (at least every five minutes), renewed after half its life.
        if let Some(authority) = &ctx.authority {
            credentials::ensure(&pool.name_any(), ctx, authority).await?;
        }
        apply_workload(pool, ctx, &namespace).await?
    };
    let ready = observed.ready_replicas.unwrap_or(0);
    let minimum = pool.spec.replicas.min;
    let mut status = MediaPoolStatus {
        replicas: observed.replicas.unwrap_or(0),
        ready_replicas: ready,
        observed_generation: pool.metadata.generation,
        conditions: pool
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
        ..MediaPoolStatus::default()
    };
    let enough = ready >= minimum;
    let (reason, message) = if !foreign.is_empty() {
        (
            "ObjectNotOwned",
            format!(
                "{} in namespace {namespace} not made by the operator for this MediaPool, left \
                 as they are; delete them to let the operator make its own",
                foreign.join(", ")
            ),
        )
    } else if enough {
        (
            "MinimumReady",
            format!("{ready} of at least {minimum} media nodes are ready"),
        )
    } else {
        (
            "Waiting",
            format!("{ready} of at least {minimum} media nodes are ready"),
        )
    };
    crd::set_condition(
        &mut status.conditions,
        "Ready",
        enough && foreign.is_empty(),
        reason,
        &message,
        pool.metadata.generation,
    );
    let previous = pool
        .status
        .as_ref()
        .map(MediaPoolStatus::without_autoscaler);
    if previous.as_ref() != Some(&status) {
        write_status(pool, ctx, &namespace, &status).await?;
    }
    Ok(Action::requeue(if !foreign.is_empty() {
        Duration::from_secs(15)
    } else if pool.spec.external {
        // Its nodes come and go without an event on the API server.
        Duration::from_secs(30)
    } else {
        // Its Deployment is watched: a change of its nodes brings the pool back at once.
        Duration::from_secs(3600)
    }))
}

/// Applies `status` and records its transitions as events: Ready, NotReady (too few media
/// nodes ready), or a workload object that is someone else's.
async fn write_status(
    pool: &MediaPool,
    ctx: &Context,
    namespace: &str,
    status: &MediaPoolStatus,
) -> Result<()> {
    let body = json!({
        "apiVersion": "treffpunkt.io/v1alpha1",
        "kind": "MediaPool",
        "status": status,
    });
    Api::<MediaPool>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            &pool.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    let ready = |conditions: &[Condition]| conditions.iter().find(|c| c.type_ == "Ready").cloned();
    let before = pool.status.as_ref().and_then(|s| ready(&s.conditions));
    let Some(now) = ready(&status.conditions) else {
        return Ok(());
    };
    let was_ready = before.as_ref().is_some_and(|c| c.status == "True");
    let is_ready = now.status == "True";
    if now.reason == "ObjectNotOwned" {
        if before.is_none_or(|c| c.reason != now.reason) {
            warn!(pool = %pool.name_any(), "{}", now.message);
            ctx.event(&pool.object_ref(&()), true, &now.reason, now.message)
                .await;
        }
    } else if is_ready != was_ready {
        ctx.event(
            &pool.object_ref(&()),
            !is_ready,
            if is_ready { "Ready" } else { "NotReady" },
            now.message,
        )
        .await;
    }
    Ok(())
}

//! Cluster mode: one control-plane replica in Kubernetes.
//!
//! Every replica serves the gateway (web client, joins, signalling), the `Attach` endpoint that
//! media nodes dial, and its admin endpoint ([`crate::admin`]). Tenants and rooms
//! live on the API server ([`KubeStore`]). The replica that holds the Lease also runs the
//! reconcilers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{PartialObjectMeta, Patch, PatchParams};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use treffpunkt_proto::grant::SharedKeyring;

use crate::fleet::attach::PodOfPool;
use crate::fleet::tls::Authority;
use crate::fleet::{Fleet, NodeEvent};
use crate::fleet::{attach, tls};
use crate::gateway::{self, Gateway, Limits, Turn};
use crate::leader::{self, Election};
use crate::metrics::Metrics;
use crate::reconcile::{Context, POOL_LABEL, Settings};
use crate::replicas::{self, Membership};
use crate::store::KubeStore;
use crate::watches::Watches;
use crate::{admin, keys};

/// The annotation by which a ReplicaSet picks the pods it removes first when scaling in.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The deletion cost of a draining media node's pod: lower than any other's.
const DRAINING_POD_COST: &str = "-1000";

/// How a replica runs.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// A kubeconfig file; in the cluster's own configuration when unset.
    pub kubeconfig: Option<PathBuf>,
    /// Where the gateway listens.
    pub http: SocketAddr,
    /// Where media nodes attach.
    pub grpc: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub admin: SocketAddr,
    /// Leader election.
    pub election: Election,
    /// The reconcilers' settings.
    pub settings: Settings,
    /// What clients of the gateway and the admin endpoint may open and how long they may take.
    pub limits: Limits,
    /// Whether the Attach port runs mutual TLS with the platform's certificate authority (the
    /// binary's replicas always do; tests of other parts attach nodes without certificates).
    pub attach_tls: bool,
    /// The TURN servers participants get credentials for; none when unset.
    pub turn: Option<Turn>,
}

/// A running replica.
pub struct Cluster {
    /// The gateway's address.
    pub http: SocketAddr,
    /// The `Attach` endpoint's address.
    pub grpc: SocketAddr,
    /// The admin endpoint's address.
    pub admin: SocketAddr,
    /// The media nodes attached to this replica.
    pub fleet: Arc<Fleet>,
    /// Whether this replica leads now.
    pub leading: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    leader: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    client: Client,
    membership: Membership,
    readiness: admin::Readiness,
}

impl Cluster {
    /// Stops the reconcilers (releasing the Lease) and every server, and leaves the replicas.
    pub async fn stop(self) {
        self.readiness.stopping();
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.leader).await;
        for task in self.tasks {
            task.abort();
        }
        replicas::leave(self.client, &self.membership).await;
    }
}

/// A client from `kubeconfig`, or from the environment (in-cluster, `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = config(kubeconfig).await?;
    Ok(Client::try_from(config)?)
}

/// The replica's client: its requests counted in `metrics`, and named in the API server's
/// audit log by a User-Agent with the replica's `identity`.
async fn replica_client(
    kubeconfig: Option<&PathBuf>,
    metrics: &Metrics,
    identity: &str,
) -> anyhow::Result<Client> {
    let mut config = config(kubeconfig).await?;
    let agent = format!(
        "treffpunkt-operator/{} ({identity})",
        env!("CARGO_PKG_VERSION")
    );
    if let Ok(agent) = axum::http::HeaderValue::from_str(&agent) {
        config.headers.push((axum::http::header::USER_AGENT, agent));
    }
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&metrics.count_api_requests())
        .build())
}

async fn config(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Config> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(config)
}

/// Marks the pod of a draining node so that scaling in removes it first.
async fn mark_draining_pods(client: Client, namespace: String, fleet: Arc<Fleet>) {
    let pods = Api::<Pod>::namespaced(client, &namespace);
    let mut events = fleet.node_events();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let NodeEvent::Draining { node, pool } = event;
        if pool.is_empty() {
            // Not a pod of a MediaPool.
            continue;
        }
        match mark_to_go_first(&pods, &node.0, &pool).await {
            Ok(()) => info!(%node, "marked the draining node's pod to go first"),
            Err(error) => warn!(%node, %error, "could not mark the draining node's pod"),
        }
    }
}

/// The metadata of the pod named `name` if it is one of `pool`'s: only a name that can name a
/// pod is looked up (ids come from the nodes), and only a pod with the pool's label counts.
async fn pool_pod(
    pods: &Api<Pod>,
    name: &str,
    pool: &str,
) -> kube::Result<Option<PartialObjectMeta<Pod>>> {
    if !crate::domain::is_object_name(name) {
        return Ok(None);
    }
    let found = pods.get_metadata_opt(name).await?;
    Ok(found.filter(|pod| pod.labels().get(POOL_LABEL).map(String::as_str) == Some(pool)))
}

/// Gives the pod of `pool`'s node `node` the lowest deletion cost of its ReplicaSet: scaling in
/// removes it first. Nothing is written when it has that cost already, or when no pod of that
/// pool has the node's name (a node outside the cluster).
pub async fn mark_to_go_first(pods: &Api<Pod>, node: &str, pool: &str) -> kube::Result<()> {
    // In a cluster the node's id is `<pool>:<pod>`; attached without certificates, the pod's
    // name alone.
    let pod = treffpunkt_proto::identity::name_in_pool(node, pool).unwrap_or(node);
    let Some(found) = pool_pod(pods, pod, pool).await? else {
        return Ok(());
    };
    if found
        .annotations()
        .get(POD_DELETION_COST)
        .map(String::as_str)
        == Some(DRAINING_POD_COST)
    {
        return Ok(());
    }
    let patch = serde_json::json!({
        "metadata": {"annotations": {POD_DELETION_COST: DRAINING_POD_COST}},
    });
    pods.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Whether `pods` holds a pod of pool `pool` named `name`: under its pod's name, a media node of
/// the release before ids named their pool attaches while the fleet is upgraded.
fn pods_of_pools(pods: Api<Pod>) -> PodOfPool {
    Arc::new(move |name: String, pool: String| {
        let pods = pods.clone();
        Box::pin(async move { matches!(pool_pod(&pods, &name, &pool).await, Ok(Some(_))) })
    })
}

/// Serves the Attach port: with mutual TLS when the replica has the platform's authority.
fn serve_attach(
    fleet: &Arc<Fleet>,
    listener: TcpListener,
    grants: SharedKeyring,
    authority: Option<Arc<Authority>>,
    pods: Api<Pod>,
) -> JoinHandle<()> {
    match authority {
        Some(authority) => {
            let pods = pods_of_pools(pods);
            let attach = tls::serve_tls(fleet.clone(), listener, grants, authority, pods);
            tokio::spawn(async move {
                if let Err(error) = attach.await {
                    warn!(%error, "the Attach port cannot serve");
                }
            })
        }
        None => tokio::spawn(attach::serve(fleet.clone(), listener, grants)),
    }
}

/// What every replica, leading or not, keeps doing from the platform's state: marking the pods
/// of draining nodes, and counting the reconcilers' backlog.
fn follow_the_platform(
    client: &Client,
    platform: &str,
    fleet: &Arc<Fleet>,
    watches: &Arc<Watches>,
    metrics: &Metrics,
) -> [JoinHandle<()>; 2] {
    let (platform, metrics) = (platform.to_owned(), metrics.clone());
    [
        tokio::spawn(mark_draining_pods(
            client.clone(),
            platform.clone(),
            fleet.clone(),
        )),
        tokio::spawn(crate::reconcile::backlog::count(
            watches.clone(),
            platform,
            metrics,
        )),
    ]
}

/// Starts a replica and returns once it serves.
pub async fn start(config: ClusterConfig) -> anyhow::Result<Cluster> {
    let metrics = Metrics::default();
    let identity = &config.election.identity;
    let client = replica_client(config.kubeconfig.as_ref(), &metrics, identity).await?;
    let settings = config.settings.clone();
    let (namespace, secret) = (&settings.platform_namespace, &settings.grant_key_secret);
    let keys::Loaded {
        keys,
        admin_token,
        authority,
    } = keys::load_or_create(&client, namespace, secret).await?;
    let authority = config.attach_tls.then(|| Arc::new(authority));
    let follow = keys::follow(
        client.clone(),
        namespace.clone(),
        secret.clone(),
        keys.clone(),
    );
    let (watches, mut tasks) = Watches::start(&client)
        .await
        .map_err(|_| anyhow::anyhow!("the watches of the API server ended before they filled"))?;
    let watches = Arc::new(watches);
    let store = KubeStore::new(client.clone(), &watches);
    tasks.push(tokio::spawn(follow));
    let store = Arc::new(store);
    let fleet = Arc::new(
        Fleet::of_replica(&config.election.identity).counting_reports_by(store.reservations()),
    );
    let membership = Membership {
        namespace: namespace.clone(),
        group: config.election.lease_name.clone(),
        identity: config.election.identity.clone(),
    };
    let readiness = admin::Readiness::default();
    tasks.push(tokio::spawn(replicas::heartbeat(
        client.clone(),
        membership.clone(),
        fleet.clone(),
        readiness.clone(),
    )));

    let grpc_listener = TcpListener::bind(config.grpc).await?;
    let grpc = grpc_listener.local_addr()?;
    let grants = keys.grants.clone();
    tasks.push(serve_attach(
        &fleet,
        grpc_listener,
        grants,
        authority.clone(),
        Api::namespaced(client.clone(), namespace),
    ));

    let gateway = Arc::new(
        Gateway::new(store.clone(), fleet.clone(), keys, config.limits.clone())
            .with_turn(config.turn.clone())
            .with_metrics(metrics.clone()),
    );
    let http_listener = TcpListener::bind(config.http).await?;
    let http = http_listener.local_addr()?;
    tasks.push(tokio::spawn(gateway.clone().sweep_unjoined_rooms()));
    tasks.push(tokio::spawn(gateway.serve(http_listener, None)));

    let admin_listener = TcpListener::bind(config.admin).await?;
    let admin = admin_listener.local_addr()?;
    let admin_router = admin::router(
        metrics.clone(),
        fleet.clone(),
        admin_token,
        readiness.clone(),
    );
    // The admin endpoint takes the same timeouts and caps, with a tally of its own.
    let limits = config.limits.clone();
    tasks.push(tokio::spawn(async move {
        gateway::serve(admin_listener, admin_router, &limits, None).await;
    }));

    let platform = &settings.platform_namespace;
    tasks.extend(follow_the_platform(
        &client, platform, &fleet, &watches, &metrics,
    ));
    let shared = (fleet.clone(), watches);
    let mut ctx = Context::new(client.clone(), shared, metrics.clone(), settings);
    if let Some(authority) = authority {
        ctx = ctx.with_authority(authority);
    }
    let ctx = Arc::new(ctx);
    let (leading_tx, leading) = watch::channel(false);
    let mut told = leading.clone();
    tasks.push(tokio::spawn(async move {
        while told.changed().await.is_ok() {
            let now = *told.borrow_and_update();
            metrics.set_leader(now);
        }
    }));
    let (stop, stop_rx) = watch::channel(false);
    let leader = tokio::spawn(leader::run(
        client.clone(),
        config.election,
        ctx,
        leading_tx,
        async move {
            let mut stop_rx = stop_rx;
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
        },
    ));
    info!(%http, %grpc, %admin, "control plane replica serving");
    Ok(Cluster {
        http,
        grpc,
        admin,
        fleet,
        leading,
        stop,
        leader,
        tasks,
        client,
        membership,
        readiness,
    })
}

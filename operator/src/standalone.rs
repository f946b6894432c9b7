//! Standalone mode: the control plane, media nodes and the web client in one process, with an
//! in-memory store and no Kubernetes.
//!
//! It is the same code as in a cluster: each media node dials the control plane's `Attach`
//! endpoint over real gRPC on loopback, and the gateway places rooms on them like on any nodes,
//! under the same limits ([`Limits`]). One node forwards on one core, so the process runs one
//! per core it is given (shards, [`StandaloneConfig::media_shards`]), each alone on a thread of
//! its own with a port of its own: a room lives on one shard until it outgrows its share, and
//! then spans shards as rooms span the nodes of a cluster.
//!
//! Ad-hoc rooms go in two ways: a new one that nobody is in a minute after its creation is
//! removed by the gateway's own sweeper (as in a cluster), and one that emptied later is
//! removed after [`StandaloneConfig::adhoc_room_ttl`] by the sweeper here, which in a cluster
//! is the Room reconciler's work.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;
use treffpunkt_media_node::metrics::encode_together;
use treffpunkt_media_node::status::NodeStatus;
use treffpunkt_media_node::udp::CpuClock;
use treffpunkt_media_node::{MediaNode, NodeConfig};
use treffpunkt_proto::grant::{Keyring, SharedKeyring};
use treffpunkt_proto::random;

use crate::admission::Keys;
use crate::domain::{Room, RoomLifetime, Tenant};
use crate::fleet::Fleet;
use crate::fleet::attach;
use crate::gateway::{Gateway, Limits, Tls, Turn};
use crate::metrics::Metrics;
use crate::store::{MemoryStore, Store, TenantSecret};

/// How long an ad-hoc room that had people may stay empty before it is removed, unless
/// configured otherwise.
pub const ADHOC_ROOM_IDLE: Duration = Duration::from_secs(300);

/// Where standalone mode listens.
#[derive(Clone, Debug)]
pub struct StandaloneConfig {
    /// The web client and signalling (HTTP).
    pub http: SocketAddr,
    /// The control plane's gRPC endpoint for media nodes; loopback in standalone mode.
    pub grpc: SocketAddr,
    /// The media node's UDP port.
    pub udp: SocketAddr,
    /// The media node's ICE-TCP port, for browsers on networks that block UDP; none when unset.
    pub tcp: Option<SocketAddr>,
    /// The certificate the web client and signalling are served with (HTTPS); plain HTTP when
    /// unset.
    pub tls: Option<Tls>,
    /// The TURN servers participants get credentials for; none when unset.
    pub turn: Option<Turn>,
    /// The address announced to browsers for media.
    pub announce_ip: IpAddr,
    /// Participants the media node accepts.
    pub max_participants: u32,
    /// The tenants to serve; the public space is added unless one of them is called `public`.
    pub tenants: Vec<Tenant>,
    /// Rooms that exist from the start.
    pub rooms: Vec<Room>,
    /// Secrets of the tenants' namespaces: rooms' passwords, tenants' signing keys.
    pub secrets: Vec<TenantSecret>,
    /// Whether to run media nodes in this process; without them, nodes of their own attach
    /// to `grpc` (with `grant_key`).
    pub media_node: bool,
    /// How many media nodes run in this process, each alone on a thread of its own (a shard),
    /// so that a machine's cores all forward media: rooms are placed on them like on the nodes
    /// of a cluster, and a room that outgrows one spans more (the shards relay to each other).
    /// Shard `i` binds the UDP and TCP ports `udp + i` and `tcp + i` (or free ones for port 0),
    /// and they share `max_participants`.
    pub media_shards: u32,
    /// The keys grants are signed with; random when unset (only the in-process node needs
    /// them then).
    pub grant_key: Option<SharedKeyring>,
    /// What clients may open and how long they may take.
    pub limits: Limits,
    /// How long an ad-hoc room that had people may stay empty before it is removed.
    pub adhoc_room_ttl: Duration,
    /// Where the metrics of the gateway and the media node are served (`GET /metrics`, for
    /// Prometheus); nowhere when unset.
    pub metrics: Option<SocketAddr>,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Self {
            http: SocketAddr::new(localhost, 8080),
            grpc: SocketAddr::new(localhost, 0),
            udp: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 10000),
            tcp: None,
            tls: None,
            turn: None,
            announce_ip: localhost,
            max_participants: 200,
            tenants: Vec::new(),
            rooms: Vec::new(),
            secrets: Vec::new(),
            media_node: true,
            media_shards: 1,
            grant_key: None,
            limits: Limits::default(),
            adhoc_room_ttl: ADHOC_ROOM_IDLE,
            metrics: None,
        }
    }
}

/// A running standalone server.
pub struct Standalone {
    /// Where the web client is served.
    pub http: SocketAddr,
    /// Where media nodes attach.
    pub grpc: SocketAddr,
    /// The ports of each in-process node (shard), in order; none with external media nodes.
    pub shards: Vec<MediaPorts>,
    /// The fleet, for tests and diagnostics.
    pub fleet: Arc<Fleet>,
    /// The tenants and rooms, for tests and diagnostics.
    pub store: Arc<MemoryStore>,
    tasks: Vec<JoinHandle<()>>,
    /// Dropped, each stops its shard.
    stop_shards: Vec<oneshot::Sender<()>>,
}

impl Standalone {
    /// Stops everything.
    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
        drop(self.stop_shards);
    }
}

/// Where browsers send media to a node of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaPorts {
    /// UDP.
    pub udp: SocketAddr,
    /// ICE-TCP, if the node takes media over TCP.
    pub tcp: Option<SocketAddr>,
}

/// A media node of this process, alone on a thread of its own.
struct Shard {
    ports: MediaPorts,
    status: NodeStatus,
    /// Dropped, it stops the node.
    stop: oneshot::Sender<()>,
}

/// Starts a media node alone on a thread of its own with a runtime of its own (so that its CPU
/// time is its thread's and no other work waits behind it), its control link on the process's
/// runtime, and returns once its ports are bound.
async fn start_shard(config: NodeConfig) -> anyhow::Result<Shard> {
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = format!("node {}", config.node_id);
    let node = MediaNode::start_alone(config, thread, MediaNode::naming_itself_in_metrics, async {
        let _ = stopped.await;
    })
    .await?;
    // The thread ends when `stop` is dropped; a shard's node ends no other way.
    drop(node.thread);
    Ok(Shard {
        ports: MediaPorts {
            udp: node.started.media_address,
            tcp: node.started.tcp_address,
        },
        status: node.started.status,
        stop,
    })
}

/// The node of shard `index`: its name, its share of `config.max_participants`, its ports.
fn shard_config(
    config: &StandaloneConfig,
    grpc: SocketAddr,
    grant_key: &SharedKeyring,
    index: u32,
    shards: u32,
) -> anyhow::Result<NodeConfig> {
    let offset = |mut address: SocketAddr| {
        if address.port() != 0 {
            let port = u16::try_from(u32::from(address.port()) + index)
                .ok()
                .context("a shard's port would be above 65535")?;
            address.set_port(port);
        }
        anyhow::Ok(address)
    };
    let share =
        config.max_participants / shards + u32::from(index < config.max_participants % shards);
    Ok(NodeConfig {
        control_plane: vec![format!("http://{grpc}")],
        node_id: match index {
            0 => "standalone".to_owned(),
            _ => format!("standalone-{}", index + 1),
        },
        pool: String::new(),
        udp_bind: offset(config.udp)?,
        announce_ip: config.announce_ip,
        max_participants: share,
        grant_key: grant_key.clone(),
        health_listen: None,
        metrics_token_file: None,
        udp_buffers: Default::default(),
        tcp_bind: config.tcp.map(offset).transpose()?,
        attach_tls_dir: None,
        cpu: CpuClock::Thread,
    })
}

fn random_key() -> Keyring {
    Keyring::from_secret(&random::bytes::<32>())
}

/// Starts the control plane, the gateway and the media nodes, and returns once the nodes have
/// attached and the gateway serves.
pub async fn start(config: StandaloneConfig) -> anyhow::Result<Standalone> {
    let mut tenants = config.tenants.clone();
    if !tenants.iter().any(|t| t.name.as_str() == "public") {
        tenants.push(Tenant::public());
    }
    let store = Arc::new(
        MemoryStore::seeded(tenants, config.rooms.clone()).with_secrets(config.secrets.clone()),
    );
    let fleet = Arc::new(Fleet::default());
    let grant_key = (config.grant_key.clone()).unwrap_or_else(|| SharedKeyring::new(random_key()));

    let grpc_listener = TcpListener::bind(config.grpc).await?;
    let grpc = grpc_listener.local_addr()?;
    let attach = attach::serve(fleet.clone(), grpc_listener, grant_key.clone());
    let grpc_task = tokio::spawn(attach);

    let mut tasks = vec![grpc_task];
    // Every shard takes at least one participant.
    let shards = match config.media_node {
        true => config.media_shards.clamp(1, config.max_participants.max(1)),
        false => 0,
    };
    let mut started = Vec::new();
    for index in 0..shards {
        let node = shard_config(&config, grpc, &grant_key, index, shards)?;
        started.push(start_shard(node).await?);
    }

    // Tickets are checked by this process alone, so their key never leaves it.
    let keys = Keys {
        grants: grant_key,
        tickets: SharedKeyring::new(random_key()),
    };
    let metrics = Metrics::default();
    let gateway = Arc::new(
        Gateway::new(store.clone(), fleet.clone(), keys, config.limits.clone())
            .with_turn(config.turn.clone())
            .with_metrics(metrics.clone()),
    );
    if let Some(address) = config.metrics {
        let listener = TcpListener::bind(address).await?;
        let nodes = started.iter().map(|shard| shard.status.clone()).collect();
        let router = metrics_router(metrics, nodes);
        let limits = config.limits.clone();
        tasks.push(tokio::spawn(async move {
            crate::gateway::serve(listener, router, &limits, None).await;
        }));
    }
    let http_listener = TcpListener::bind(config.http).await?;
    let http = http_listener.local_addr()?;
    let unjoined_task = tokio::spawn(gateway.clone().sweep_unjoined_rooms());
    let http_task = tokio::spawn(gateway.serve(http_listener, config.tls.clone()));
    let sweeper_task = tokio::spawn(sweep_adhoc_rooms(
        store.clone(),
        fleet.clone(),
        config.adhoc_room_ttl,
    ));

    let attached_by = Instant::now() + Duration::from_secs(10);
    while fleet.nodes().len() < started.len() {
        if Instant::now() > attached_by {
            anyhow::bail!("the media nodes did not attach within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!(%http, %grpc, shards, "standalone mode ready");
    tasks.extend([http_task, sweeper_task, unjoined_task]);
    Ok(Standalone {
        http,
        grpc,
        shards: started.iter().map(|shard| shard.ports).collect(),
        fleet,
        store,
        tasks,
        stop_shards: started.into_iter().map(|shard| shard.stop).collect(),
    })
}

/// `GET /metrics`: the gateway's metrics, then the media nodes', whose series name their node.
fn metrics_router(metrics: Metrics, nodes: Vec<NodeStatus>) -> axum::Router {
    let serve = move || {
        let (metrics, nodes) = (metrics.clone(), nodes.clone());
        async move {
            let mut text = metrics.encode();
            if !nodes.is_empty() {
                // One document: the first part's end marker goes.
                if let Some(stripped) = text.strip_suffix("# EOF\n") {
                    text.truncate(stripped.len());
                }
                let nodes: Vec<_> = nodes.iter().map(NodeStatus::metrics).collect();
                text.push_str(&encode_together(&nodes));
            }
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(serve))
}

/// Removes ad-hoc rooms that have been empty for `idle`, so that no trace of a meeting stays
/// behind for longer than needed.
async fn sweep_adhoc_rooms(store: Arc<MemoryStore>, fleet: Arc<Fleet>, idle: Duration) {
    let mut empty_since: HashMap<crate::domain::RoomKey, Instant> = HashMap::new();
    let mut tick = tokio::time::interval((idle / 10).max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        let Ok(rooms) = store.rooms().await else {
            continue;
        };
        let occupied = fleet.occupied_rooms();
        let now = Instant::now();
        empty_since.retain(|key, _| rooms.iter().any(|room| &room.key == key));
        for room in rooms {
            if room.lifetime != RoomLifetime::AdHoc || occupied.contains(&room.key) {
                empty_since.remove(&room.key);
                continue;
            }
            let since = *empty_since.entry(room.key.clone()).or_insert(now);
            if now.duration_since(since) >= idle
                && store.delete_room(&room.key, &room.revision).await.is_ok()
            {
                empty_since.remove(&room.key);
            }
        }
    }
}

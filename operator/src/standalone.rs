//! Standalone mode: the control plane, one media node and the web client in one process, with
//! an in-memory store and no Kubernetes.
//!
//! It is the same code as in a cluster: the media node dials the control plane's `Attach`
//! endpoint over real gRPC on loopback, and the gateway places rooms on it like on any node,
//! under the same limits ([`Limits`]).
//!
//! Ad-hoc rooms go in two ways: a new one that nobody is in a minute after its creation is
//! removed by the gateway's own sweeper (as in a cluster), and one that emptied later is
//! removed after [`StandaloneConfig::adhoc_room_ttl`] by the sweeper here, which in a cluster
//! is the Room reconciler's work.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};
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
    /// Whether to run a media node in this process; without one, nodes of their own attach
    /// to `grpc` (with `grant_key`).
    pub media_node: bool,
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
    /// Where browsers send media to the in-process node, if there is one.
    pub media: Option<SocketAddr>,
    /// Where browsers connect for ICE-TCP to the in-process node, if it takes media over TCP.
    pub media_tcp: Option<SocketAddr>,
    /// The fleet, for tests and diagnostics.
    pub fleet: Arc<Fleet>,
    /// The tenants and rooms, for tests and diagnostics.
    pub store: Arc<MemoryStore>,
    tasks: Vec<JoinHandle<()>>,
}

impl Standalone {
    /// Stops everything.
    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

fn random_key() -> Keyring {
    Keyring::from_secret(&random::bytes::<32>())
}

/// Starts the control plane, the gateway and one media node, and returns once the node has
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
    let (mut media, mut media_tcp, mut node_status) = (None, None, None);
    if config.media_node {
        let node = MediaNode::bind(NodeConfig {
            control_plane: vec![format!("http://{grpc}")],
            node_id: "standalone".to_owned(),
            pool: String::new(),
            udp_bind: config.udp,
            announce_ip: config.announce_ip,
            max_participants: config.max_participants,
            grant_key: grant_key.clone(),
            health_listen: None,
            udp_buffers: Default::default(),
            tcp_bind: config.tcp,
            attach_tls_dir: None,
        })
        .await?;
        media = Some(node.media_address());
        media_tcp = node.tcp_address();
        node_status = Some(node.status());
        tasks.push(tokio::spawn(async move {
            if let Err(error) = node.run().await {
                warn!(%error, "the media node stopped");
            }
        }));
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
        let router = metrics_router(metrics, node_status);
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
    while config.media_node && fleet.nodes().is_empty() {
        if Instant::now() > attached_by {
            anyhow::bail!("the media node did not attach within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!(%http, %grpc, "standalone mode ready");
    tasks.extend([http_task, sweeper_task, unjoined_task]);
    Ok(Standalone {
        http,
        grpc,
        media,
        media_tcp,
        fleet,
        store,
        tasks,
    })
}

/// `GET /metrics`: the gateway's metrics, then the media node's.
fn metrics_router(
    metrics: Metrics,
    node: Option<treffpunkt_media_node::status::NodeStatus>,
) -> axum::Router {
    let serve = move || {
        let (metrics, node) = (metrics.clone(), node.clone());
        async move {
            let mut text = metrics.encode();
            if let Some(node) = &node {
                // One document: the first part's end marker goes.
                if let Some(stripped) = text.strip_suffix("# EOF\n") {
                    text.truncate(stripped.len());
                }
                text.push_str(&node.metrics().encode());
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

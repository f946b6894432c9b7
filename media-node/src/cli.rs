//! The media node's command line, shared by the `treffpunkt-media-node` binary and the
//! `treffpunkt media-node` subcommand: the same flags and environment variables either way.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use treffpunkt_proto::grant::{Keyring, SharedKeyring};

use crate::{MediaNode, NodeConfig, udp};

/// The environment variable that holds the grant key, unless a file does.
pub const GRANT_KEY_VARIABLE: &str = "TREFFPUNKT_GRANT_KEY";

/// A Treffpunkt media node.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The control plane's gRPC addresses, comma-separated; a name that resolves to several
    /// addresses (the operator's headless Service) means one replica per address.
    #[arg(
        long,
        env = "TREFFPUNKT_CONTROL_PLANE",
        default_value = "http://127.0.0.1:7001",
        value_delimiter = ','
    )]
    pub control_plane: Vec<String>,
    /// This node's name; defaults to the host name. With `--attach-tls-dir` the node registers
    /// as `<pool>:<name>`, the only form the control plane takes from a pool's certificate.
    #[arg(long, env = "TREFFPUNKT_NODE_ID")]
    pub node_id: Option<String>,
    /// The MediaPool this node belongs to.
    #[arg(long, env = "TREFFPUNKT_POOL", default_value = "")]
    pub pool: String,
    /// Where the UDP media port binds.
    #[arg(long, env = "TREFFPUNKT_UDP_BIND", default_value = "0.0.0.0:10000")]
    pub udp_bind: SocketAddr,
    /// Where the ICE-TCP port binds, for browsers on networks that block UDP; unset, the node
    /// takes media over UDP only.
    #[arg(long, env = "TREFFPUNKT_TCP_BIND")]
    pub tcp_bind: Option<SocketAddr>,
    /// The address announced to clients (in Kubernetes: the node's address, from the
    /// downward API).
    #[arg(long, env = "TREFFPUNKT_ANNOUNCE_IP", default_value = "127.0.0.1")]
    pub announce_ip: IpAddr,
    /// Participants this node accepts.
    #[arg(long, env = "TREFFPUNKT_MAX_PARTICIPANTS", default_value_t = 200)]
    pub max_participants: u32,
    /// Where the health endpoint listens: `/healthz` and `/readyz` for probes, `/status` and
    /// `/metrics` for the platform's monitoring.
    #[arg(long, env = "TREFFPUNKT_HEALTH_LISTEN", default_value = "0.0.0.0:9091")]
    pub health_listen: SocketAddr,
    /// A file with the bearer token (at least 16 characters) that `/status` and `/metrics` ask
    /// for, read again for every request; without it they answer only on loopback.
    #[arg(long, env = "TREFFPUNKT_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// On SIGTERM, how long running meetings may take to move to other nodes, in seconds.
    #[arg(long, env = "TREFFPUNKT_DRAIN_GRACE", default_value_t = 240)]
    pub drain_grace: u64,
    /// On SIGTERM, let the meetings run until the deadline instead of moving them to other
    /// nodes.
    #[arg(long, env = "TREFFPUNKT_DRAIN_WITHOUT_MOVING")]
    pub drain_without_moving: bool,
    /// The media port's receive buffer, in bytes (the kernel caps it at net.core.rmem_max for
    /// processes without CAP_NET_ADMIN; the node warns at start-up when it got less).
    #[arg(long, env = "TREFFPUNKT_UDP_RECEIVE_BUFFER", default_value_t = udp::DEFAULT_BUFFER_BYTES)]
    pub udp_receive_buffer: usize,
    /// The media port's send buffer, in bytes (capped at net.core.wmem_max likewise).
    #[arg(long, env = "TREFFPUNKT_UDP_SEND_BUFFER", default_value_t = udp::DEFAULT_BUFFER_BYTES)]
    pub udp_send_buffer: usize,
    /// A file that holds the grant key shared with the control plane; without it, the key is
    /// read from the environment variable TREFFPUNKT_GRANT_KEY. Never a flag: the command line
    /// is visible to every user of the machine. Several keys, comma-separated, are all accepted
    /// (while one is rotated).
    #[arg(long, env = "TREFFPUNKT_GRANT_KEY_FILE")]
    pub grant_key_file: Option<PathBuf>,
    /// A folder with the node's certificate for the control plane's mutual TLS: `ca.crt` (the
    /// platform's authority), `tls.crt` and `tls.key` (the node's, naming its pool). Read again
    /// for every connection, so a renewed certificate is used from the next one on. Without
    /// it, the node attaches without TLS (standalone mode).
    #[arg(long, env = "TREFFPUNKT_ATTACH_TLS_DIR")]
    pub attach_tls_dir: Option<PathBuf>,
}

/// Starts logging to stdout: a line per event for people to read, or with
/// `TREFFPUNKT_LOG_FORMAT=json` one JSON object per line for a log pipeline. The filter is
/// [`log_filter`].
pub fn init_logging() {
    let logs = tracing_subscriber::fmt().with_env_filter(log_filter());
    if logs_json() {
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logs.init();
    }
}

/// Whether `TREFFPUNKT_LOG_FORMAT` asks for JSON logs.
pub fn logs_json() -> bool {
    std::env::var("TREFFPUNKT_LOG_FORMAT")
        .is_ok_and(|format| format.trim().eq_ignore_ascii_case("json"))
}

/// The log filter of both binaries: `RUST_LOG` (default `info`), with the WebRTC stack kept to
/// errors unless `RUST_LOG` names it. The stack logs a warning for every datagram it refuses,
/// so garbage on the media port would otherwise write a line per datagram; the node counts what
/// it drops and logs a summary instead.
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    let configured = std::env::var("RUST_LOG").unwrap_or_default();
    let mut directives = if configured.trim().is_empty() {
        "info".to_owned()
    } else {
        configured
    };
    // A directive's target matches every target it begins: `rtc` covers `rtc_ice` and the rest.
    let names_rtc = directives
        .split(',')
        .any(|directive| directive.trim().starts_with("rtc"));
    if !names_rtc {
        directives.push_str(",rtc=error");
    }
    tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rtc=error"))
}

/// The runtime of a media node's process: one thread, for the control link, the health
/// endpoint and the signals; the media loop has a thread and a runtime of its own
/// ([`MediaNode::start_alone`]).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs a media node as `args` say, until it has drained (on SIGTERM, or when the control plane
/// tells it to).
pub async fn run(args: Args) -> anyhow::Result<()> {
    let grant_key = Keyring::from_file_or_env(args.grant_key_file.as_deref(), GRANT_KEY_VARIABLE)
        .map_err(|error| anyhow::anyhow!("the grant key: {error}"))?
        .context(
            "no grant key: set TREFFPUNKT_GRANT_KEY or --grant-key-file to the control plane's",
        )?;
    let node_id = match args.node_id {
        Some(id) => id,
        None => std::fs::read_to_string("/etc/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "media-node".to_owned()),
    };
    // With certificates the control plane takes only ids of the certificate's pool.
    let node_id = if args.attach_tls_dir.is_some() {
        treffpunkt_proto::identity::node_id(&args.pool, &node_id)
    } else {
        node_id
    };
    let grant_key = SharedKeyring::new(grant_key);
    // A key file is followed: the operator rotates the key by changing it.
    if let Some(file) = &args.grant_key_file {
        crate::keys::follow(file.clone(), grant_key.clone());
    }
    let config = NodeConfig {
        control_plane: args.control_plane,
        node_id,
        pool: args.pool,
        udp_bind: args.udp_bind,
        tcp_bind: args.tcp_bind,
        announce_ip: args.announce_ip,
        max_participants: args.max_participants,
        grant_key,
        health_listen: Some(args.health_listen),
        metrics_token_file: args.metrics_token_file,
        udp_buffers: udp::Buffers {
            receive: args.udp_receive_buffer,
            send: args.udp_send_buffer,
        },
        attach_tls_dir: args.attach_tls_dir,
        cpu: Default::default(),
    };
    let media_loop = MediaNode::start_alone(
        config,
        "media loop".to_owned(),
        |node| node,
        std::future::pending(),
    )
    .await
    .context("starting the media node")?;
    let handle = media_loop.started.handle;
    let grace = std::time::Duration::from_secs(args.drain_grace);
    let move_sessions = !args.drain_without_moving;
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        handle.drain(move_sessions, grace).await;
    });
    // Returns once the node has drained: then the process exits 0.
    tokio::task::spawn_blocking(move || media_loop.thread.join())
        .await
        .context("waiting for the media loop")?
        .map_err(|_| anyhow::anyhow!("the media loop panicked"))?
        .context("running the media node")?;
    Ok(())
}

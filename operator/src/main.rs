//! The `treffpunkt` binary: the control plane, and standalone mode.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use treffpunkt_media_node::Allocator;
use treffpunkt_operator::cluster::{self, ClusterConfig};
use treffpunkt_operator::coturn::{self, Coturn, CoturnConfig};
use treffpunkt_operator::domain::{RoomKey, RoomName, Tenant, TenantName};
use treffpunkt_operator::gateway::{LimitArgs, Tls, TurnArgs};
use treffpunkt_operator::keys::Rotation;
use treffpunkt_operator::leader::Election;
use treffpunkt_operator::reconcile::{Settings, TenantSecrets};
use treffpunkt_operator::standalone::{self, StandaloneConfig};
use treffpunkt_operator::{invite, seed, self_signed};
use treffpunkt_proto::grant::{Keyring, SharedKeyring};

/// The allocator of the binary that forwards media in standalone mode and as `media-node`.
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

/// Treffpunkt: video meetings a city can run for its people.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One control-plane replica in Kubernetes: gateway, Attach endpoint, admin endpoint, and
    /// (while holding the Lease) the reconcilers.
    Operator(Box<OperatorArgs>),
    /// A media node that attaches to the control plane (the same as `treffpunkt-media-node`).
    MediaNode(Box<treffpunkt_media_node::cli::Args>),
    /// Everything on one machine, no cluster: the web client, the control plane and one media
    /// node, with rooms kept in memory.
    Standalone(Box<StandaloneArgs>),
    /// Prints an invitation link into an invite-only room (or, with --moderator, a moderator's
    /// link into any room), signed with the tenant's own key:
    /// read with your kubeconfig from the tenant's namespace (its admins may), or from the
    /// manifests file of standalone mode. Deleting the tenant's Secret treffpunkt-signing-key
    /// (the operator makes a new one) revokes every link made before.
    Invite(InviteArgs),
}

#[derive(Debug, clap::Args)]
struct InviteArgs {
    /// The tenant.
    tenant: String,
    /// The room.
    room: String,
    /// How long the link is valid, in hours (at most a year).
    #[arg(long, default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..=8784))]
    valid_hours: u64,
    /// The room's address (https://HOST/TENANT/ROOM); in a cluster, the Room's join URL
    /// when unset; for standalone mode, http://127.0.0.1:8080/TENANT/ROOM.
    #[arg(long)]
    url: Option<String>,
    /// Whoever comes in with the link moderates the meeting (in any room, not only an
    /// invite-only one).
    #[arg(long)]
    moderator: bool,
    /// Standalone mode: the manifests file that holds the tenant's signing key.
    #[arg(long)]
    manifests: Option<std::path::PathBuf>,
    /// A kubeconfig file; $KUBECONFIG or ~/.kube/config when unset.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
struct StandaloneArgs {
    /// Where the web client is served.
    #[arg(long, env = "TREFFPUNKT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the metrics of the gateway and the media node are served for Prometheus
    /// (`GET /metrics`), e.g. 127.0.0.1:9090; nowhere when unset.
    #[arg(long, env = "TREFFPUNKT_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// The media node's UDP port.
    #[arg(long, env = "TREFFPUNKT_UDP_PORT", default_value_t = 10000)]
    udp_port: u16,
    /// The media node's TCP port for ICE-TCP, which browsers use where UDP is blocked (0 picks
    /// a free port).
    #[arg(long, env = "TREFFPUNKT_TCP_PORT", default_value_t = 10443)]
    tcp_port: u16,
    /// Serve HTTPS with this certificate (PEM, the chain in order) and --tls-key: browsers on
    /// other machines allow the camera only over HTTPS.
    #[arg(
        long,
        env = "TREFFPUNKT_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "self_signed"
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "TREFFPUNKT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Serve HTTPS with a certificate made for --announce-ip at the first start and kept in
    /// --state-dir; browsers warn once, then remember it.
    #[arg(long, env = "TREFFPUNKT_SELF_SIGNED")]
    self_signed: bool,
    /// Where standalone mode keeps what it remembers between starts (the self-signed
    /// certificate); $XDG_STATE_HOME/treffpunkt or ~/.local/state/treffpunkt when unset.
    #[arg(long, env = "TREFFPUNKT_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Also run a TURN server (Debian's coturn, `turnserver`) on --announce-ip and --turn-port
    /// over TLS, with the HTTPS certificate, for participants whose network lets only HTTPS
    /// out. Needs --self-signed or --tls-cert.
    #[arg(long = "turn", env = "TREFFPUNKT_TURN", conflicts_with = "urls")]
    turn_server: bool,
    /// The TURN server's port with --turn: 443, the one such networks let through (binding it
    /// needs root or CAP_NET_BIND_SERVICE for turnserver).
    #[arg(long, env = "TREFFPUNKT_TURN_PORT", default_value_t = 443)]
    turn_port: u16,
    /// The address browsers send media to: 127.0.0.1 for this machine only, the machine's
    /// LAN address to let others in the network join.
    #[arg(long, env = "TREFFPUNKT_ANNOUNCE_IP", default_value = "127.0.0.1")]
    announce_ip: IpAddr,
    /// Participants the media nodes accept, together.
    #[arg(long, default_value_t = 200)]
    max_participants: u32,
    /// Media nodes in this process, one per core by default: each forwards on a core of its
    /// own, binds the UDP and TCP ports after the previous one's (--udp-port + i,
    /// --tcp-port + i) and takes its share of --max-participants.
    #[arg(long, env = "TREFFPUNKT_MEDIA_SHARDS", value_parser = clap::value_parser!(u32).range(1..=64))]
    media_shards: Option<u32>,
    /// Participants one room of the public space admits.
    #[arg(long, default_value_t = 20)]
    max_participants_per_room: u32,
    /// Tenant and Room manifests (the same YAML as for kubectl) to start with.
    #[arg(long, env = "TREFFPUNKT_MANIFESTS")]
    manifests: Option<std::path::PathBuf>,
    /// Where media nodes attach (gRPC); only loopback unless nodes run elsewhere.
    #[arg(long, env = "TREFFPUNKT_GRPC_LISTEN", default_value = "127.0.0.1:0")]
    grpc_listen: SocketAddr,
    /// Run no media node in this process: nodes of their own attach to --grpc-listen.
    #[arg(long)]
    external_media_nodes: bool,
    /// A file that holds the grant key shared with external media nodes; without it, the key
    /// is read from the environment variable TREFFPUNKT_GRANT_KEY (never a flag: the command
    /// line is visible to every user of the machine).
    #[arg(long, env = "TREFFPUNKT_GRANT_KEY_FILE")]
    grant_key_file: Option<std::path::PathBuf>,
    /// How long an ad-hoc room that had people may stay empty before it is removed, in
    /// seconds.
    #[arg(long, env = "TREFFPUNKT_ADHOC_ROOM_TTL", default_value_t = 300)]
    adhoc_room_ttl: u64,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    turn: TurnArgs,
}

#[derive(Debug, clap::Args)]
struct OperatorArgs {
    /// A kubeconfig file; the in-cluster configuration (or $KUBECONFIG) when unset.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Where the gateway (web client, joins, signalling) listens.
    #[arg(long, env = "TREFFPUNKT_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,
    /// Where media nodes attach (gRPC).
    #[arg(long, env = "TREFFPUNKT_GRPC_LISTEN", default_value = "0.0.0.0:7001")]
    grpc_listen: SocketAddr,
    /// Where /metrics, /healthz, /readyz and the admin commands (`POST /nodes/{node}/drain`)
    /// are served; keep it inside the cluster.
    #[arg(long, env = "TREFFPUNKT_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// The platform's namespace: MediaPools, the grant key and the Lease live there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "treffpunkt")]
    namespace: String,
    /// This replica's identity in leader election.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The Lease's name.
    #[arg(long, default_value = "treffpunkt-operator")]
    lease_name: String,
    /// How long the Lease lasts without renewal, in seconds.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// The address people open; room join URLs start with it.
    #[arg(
        long,
        env = "TREFFPUNKT_PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    public_url: String,
    /// How long an ad-hoc room may stay empty before it is removed, in seconds.
    #[arg(long, env = "TREFFPUNKT_ADHOC_ROOM_TTL", default_value_t = 300)]
    adhoc_room_ttl: u64,
    /// How long a MediaPool's load must stay above its target before the autoscaler adds
    /// nodes, in seconds.
    #[arg(long, env = "TREFFPUNKT_SCALE_OUT_AFTER", default_value_t = 60)]
    scale_out_after: u64,
    /// How long a MediaPool's load must stay low before the autoscaler drains a node to remove
    /// it, in seconds.
    #[arg(long, env = "TREFFPUNKT_SCALE_IN_AFTER", default_value_t = 300)]
    scale_in_after: u64,
    /// The gRPC address media nodes dial; the operator's attach Service when unset.
    #[arg(long, env = "TREFFPUNKT_ATTACH_ADDRESS")]
    attach_address: Option<String>,
    /// The Secret with the key grants are signed with.
    #[arg(
        long,
        env = "TREFFPUNKT_GRANT_KEY_SECRET",
        default_value = "treffpunkt-grant-key"
    )]
    grant_key_secret: String,
    /// How often the keys in that Secret get a successor, in days; 0 for never. Each rotation
    /// takes three steps ten minutes apart.
    #[arg(long, env = "TREFFPUNKT_KEY_ROTATION_DAYS", default_value_t = 30)]
    key_rotation_days: u32,
    /// The ClusterRole with the operator's rights on Secrets, which it binds to its own
    /// ServiceAccount in each tenant namespace it manages. When unset, it binds nothing and its
    /// own rights must cover those Secrets.
    #[arg(
        long,
        env = "TREFFPUNKT_TENANT_SECRETS_ROLE",
        requires = "service_account"
    )]
    tenant_secrets_role: Option<String>,
    /// The operator's ServiceAccount (in its namespace), for the binding above.
    #[arg(long, env = "POD_SERVICE_ACCOUNT")]
    service_account: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    turn: TurnArgs,
}

async fn run_operator(args: OperatorArgs) -> anyhow::Result<()> {
    let identity = args.identity.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| format!("treffpunkt-{}", std::process::id()))
    });
    let attach_address = args.attach_address.unwrap_or_else(|| {
        format!(
            "http://treffpunkt-attach.{}.svc:{}",
            args.namespace,
            args.grpc_listen.port()
        )
    });
    let running = cluster::start(ClusterConfig {
        kubeconfig: args.kubeconfig,
        http: args.http_listen,
        grpc: args.grpc_listen,
        admin: args.admin_listen,
        election: Election {
            namespace: args.namespace.clone(),
            lease_name: args.lease_name,
            identity,
            duration_seconds: args.lease_seconds,
        },
        settings: Settings {
            platform_namespace: args.namespace,
            public_url: args.public_url,
            adhoc_room_ttl: std::time::Duration::from_secs(args.adhoc_room_ttl),
            attach_address,
            grant_key_secret: args.grant_key_secret,
            key_rotation: (args.key_rotation_days > 0).then(|| Rotation {
                every: std::time::Duration::from_secs(u64::from(args.key_rotation_days) * 86_400),
                step: Rotation::STEP,
            }),
            tenant_secrets: args.tenant_secrets_role.zip(args.service_account).map(
                |(cluster_role, service_account)| TenantSecrets {
                    cluster_role,
                    service_account,
                },
            ),
            autoscaling: treffpunkt_operator::autoscaler::Timing {
                out_after: std::time::Duration::from_secs(args.scale_out_after),
                in_after: std::time::Duration::from_secs(args.scale_in_after),
            },
            log_json: treffpunkt_media_node::cli::logs_json(),
            log_filter: std::env::var("RUST_LOG")
                .ok()
                .filter(|filter| !filter.is_empty()),
        },
        limits: args.limits.limits(),
        attach_tls: true,
        turn: args.turn.turn().map_err(|error| anyhow::anyhow!(error))?,
    })
    .await?;
    shutdown_signal().await;
    running.stop().await;
    Ok(())
}

async fn run_standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let StandaloneArgs {
        listen,
        metrics_listen,
        udp_port,
        tcp_port,
        tls_cert,
        tls_key,
        self_signed,
        state_dir,
        turn_server,
        turn_port,
        announce_ip,
        max_participants,
        media_shards,
        max_participants_per_room,
        manifests,
        grpc_listen,
        external_media_nodes,
        grant_key_file,
        adhoc_room_ttl,
        limits,
        turn,
    } = args;
    let grant_key = Keyring::from_file_or_env(
        grant_key_file.as_deref(),
        treffpunkt_media_node::cli::GRANT_KEY_VARIABLE,
    )
    .map_err(|error| anyhow::anyhow!("the grant key: {error}"))?;
    if external_media_nodes && grant_key.is_none() {
        anyhow::bail!(
            "--external-media-nodes needs the grant key shared with the nodes: set TREFFPUNKT_GRANT_KEY or --grant-key-file"
        );
    }
    let grant_key = grant_key.map(SharedKeyring::new);
    // A key file is followed, so that the key can be rotated while the platform runs.
    if let (Some(file), Some(keys)) = (&grant_key_file, &grant_key) {
        treffpunkt_media_node::keys::follow(file.clone(), keys.clone());
    }
    let seed = read_manifests(manifests.as_deref())?;
    let mut public = Tenant::public();
    public.limits.max_participants_per_room = max_participants_per_room;
    let mut tenants = seed.tenants;
    if !tenants.iter().any(|t| t.name == public.name) {
        tenants.push(public);
    }
    let state_dir = state_dir.or_else(self_signed::default_state_dir);
    let https = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some((tls_from_files(&cert, &key)?, cert, key)),
        _ if self_signed => Some(self_signed_tls(state_dir.clone(), listen, announce_ip)?),
        _ => None,
    };
    let coturn = match (&https, turn_server) {
        (Some((_, cert, key)), true) => Some(Coturn::start(&CoturnConfig {
            listen: SocketAddr::new(announce_ip, turn_port),
            cert: cert.clone(),
            key: key.clone(),
            dir: state_dir
                .context("no --state-dir for the TURN server's files")?
                .join("turn"),
        })?),
        (None, true) => anyhow::bail!("--turn needs HTTPS: --self-signed or --tls-cert"),
        (_, false) => None,
    };
    let turn = match &coturn {
        Some(coturn) => Some(coturn.turn()),
        None => turn.turn().map_err(|error| anyhow::anyhow!(error))?,
    };
    let tls = https.map(|(tls, _, _)| tls);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let running = standalone::start(StandaloneConfig {
        http: listen,
        udp: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), udp_port),
        tcp: Some(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), tcp_port)),
        tls,
        turn,
        announce_ip,
        max_participants,
        tenants,
        rooms: seed.rooms,
        secrets: seed.secrets,
        grpc: grpc_listen,
        media_node: !external_media_nodes,
        media_shards: media_shards.unwrap_or_else(cores),
        grant_key,
        limits: limits.limits(),
        adhoc_room_ttl: std::time::Duration::from_secs(adhoc_room_ttl),
        metrics: metrics_listen,
    })
    .await?;
    let url = match running.http.ip() {
        ip if ip.is_unspecified() => {
            format!("{scheme}://{announce_ip}:{}/", running.http.port())
        }
        _ => format!("{scheme}://{}/", running.http),
    };
    println!("Treffpunkt is running. Open {url} in your browser.");
    println!("Treffpunkt läuft. Öffnen Sie {url} im Browser.");
    if let Some(ports) = media_ports(&running.shards) {
        println!("Media: {ports}; open them in the firewall for others to join.");
        println!("Medien: {ports}; für andere in der Firewall öffnen.");
    }
    if let Some(mut coturn) = coturn {
        // coturn is watched while the platform runs, and stopped with it.
        tokio::spawn(async move {
            while coturn.running() {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            }
            eprintln!("the TURN server ({}) stopped", coturn::PROGRAM);
        });
    }
    shutdown_signal().await;
    running.stop();
    Ok(())
}

/// The Tenants, Rooms and Secrets of standalone mode's manifests file, if it has one; what it
/// skips is told on standard error.
fn read_manifests(path: Option<&std::path::Path>) -> anyhow::Result<seed::Seed> {
    let Some(path) = path else {
        return Ok(seed::Seed::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let seed = seed::parse(&text).with_context(|| format!("in {}", path.display()))?;
    for skipped in &seed.skipped {
        eprintln!("{}: skipped {skipped}", path.display());
    }
    Ok(seed)
}

/// HTTPS with a certificate and key the club has.
fn tls_from_files(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Tls> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    Tls::from_pem(&read(cert)?, &read(key)?)
        .map_err(|error| anyhow::anyhow!("--tls-cert/--tls-key: {error}"))
}

/// HTTPS with a certificate of its own for the announced address (and the listening one),
/// made once and kept; tells in German and English what participants' browsers will say.
/// Returns the server's TLS and the certificate's and key's files.
fn self_signed_tls(
    state_dir: Option<std::path::PathBuf>,
    listen: SocketAddr,
    announce_ip: IpAddr,
) -> anyhow::Result<(Tls, std::path::PathBuf, std::path::PathBuf)> {
    let dir = state_dir
        .context("no --state-dir and no home folder to keep the certificate in")?
        .join("standalone-tls");
    let mut names = vec![announce_ip.to_string()];
    let listening = (!listen.ip().is_unspecified()).then(|| listen.ip().to_string());
    for name in listening
        .into_iter()
        .chain(["127.0.0.1".into(), "localhost".into()])
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let certificate = self_signed::load_or_make(&dir, &names)?;
    let made = if certificate.new { "made" } else { "kept" };
    println!(
        "HTTPS with a self-signed certificate ({made}: {}), for {}.",
        certificate.path.display(),
        names.join(", ")
    );
    println!("SHA-256 fingerprint: {}", certificate.fingerprint);
    println!(
        "Browsers warn that the connection is not private, because this certificate was made by \
         this server and not by a certificate authority. Compare the fingerprint the browser \
         shows in the certificate's details with the one above; if they match, choose \
         \"Advanced\", then \"Proceed\". The browser remembers it."
    );
    println!(
        "Browser warnen, die Verbindung sei nicht privat, weil dieses Zertifikat von diesem \
         Server selbst und nicht von einer Zertifizierungsstelle stammt. Vergleichen Sie den \
         Fingerabdruck in den Details des Zertifikats im Browser mit dem obigen; stimmen sie \
         überein, wählen Sie „Erweitert“ und dann „Weiter“. Der Browser merkt sich das."
    );
    let tls = Tls::from_pem(&certificate.cert_pem, &certificate.key_pem)
        .map_err(|error| anyhow::anyhow!(error))?;
    Ok((tls, certificate.path, certificate.key_path))
}

async fn run_invite(args: InviteArgs) -> anyhow::Result<()> {
    let room = RoomKey {
        tenant: TenantName::new(args.tenant.as_str())?,
        name: RoomName::new(args.room.as_str())?,
    };
    let (key, room_url) = match &args.manifests {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let key = invite::from_manifests(&text, &room)
                .with_context(|| format!("in {}", path.display()))?;
            let url = format!("http://127.0.0.1:8080/{}/{}", room.tenant, room.name);
            (key, Some(url))
        }
        None => {
            let client = cluster::client(args.kubeconfig.as_ref()).await?;
            invite::from_cluster(client, &room).await?
        }
    };
    let Some(room_url) = args.url.or(room_url) else {
        anyhow::bail!("the room has no join URL yet; give its address with --url");
    };
    let link = invite::Link {
        valid: std::time::Duration::from_secs(args.valid_hours * 3600),
        moderator: args.moderator,
    };
    println!(
        "{}",
        invite::link(&room_url, &room, &key, link, invite::now())
    );
    eprintln!(
        "valid for {} hours / gültig für {} Stunden",
        args.valid_hours, args.valid_hours
    );
    Ok(())
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
/// The media nodes' ports, as a firewall wants them: `UDP 10000-10001, TCP 10443-10444`.
fn media_ports(shards: &[standalone::MediaPorts]) -> Option<String> {
    let range = |mut ports: Vec<u16>| {
        ports.sort_unstable();
        let (first, last) = (*ports.first()?, *ports.last()?);
        let listed = ports.iter().map(u16::to_string).collect::<Vec<_>>();
        Some(
            match usize::from(last - first) + 1 == ports.len() && first != last {
                true => format!("{first}-{last}"),
                false => listed.join(", "),
            },
        )
    };
    let udp = range(shards.iter().map(|shard| shard.udp.port()).collect())?;
    let tcp = range(
        shards
            .iter()
            .filter_map(|shard| Some(shard.tcp?.port()))
            .collect(),
    );
    Some(match tcp {
        Some(tcp) => format!("UDP {udp}, TCP {tcp}"),
        None => format!("UDP {udp}"),
    })
}

/// The cores this process may use (its CPU affinity and cgroup quota), at least one.
fn cores() -> u32 {
    std::thread::available_parallelism()
        .ok()
        .and_then(|cores| u32::try_from(cores.get()).ok())
        .unwrap_or(1)
        .min(64)
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn main() -> anyhow::Result<()> {
    treffpunkt_media_node::cli::init_logging();
    let command = Args::parse().command;
    // A media node's loop runs on a thread of its own; the process's runtime needs one thread
    // for the control link, the health endpoint and the signals (see
    // `treffpunkt_media_node::MediaNode::start_alone`).
    let runtime = match command {
        Command::MediaNode(_) => treffpunkt_media_node::cli::runtime()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        match command {
            Command::Operator(args) => run_operator(*args).await,
            Command::MediaNode(args) => treffpunkt_media_node::cli::run(*args).await,
            Command::Standalone(args) => run_standalone(*args).await,
            Command::Invite(args) => run_invite(args).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(udp: &[u16], tcp: &[u16]) -> Vec<standalone::MediaPorts> {
        let at = |port| SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port);
        let tcp = |index: usize| tcp.get(index).map(|port| at(*port));
        let shards = udp.iter().enumerate();
        (shards.map(|(index, udp)| standalone::MediaPorts {
            udp: at(*udp),
            tcp: tcp(index),
        }))
        .collect()
    }

    #[test]
    fn the_media_ports_are_told_as_a_firewall_wants_them() {
        let told = |udp: &[u16], tcp: &[u16]| media_ports(&ports(udp, tcp));
        assert_eq!(
            told(&[10000], &[10443]).as_deref(),
            Some("UDP 10000, TCP 10443")
        );
        assert_eq!(
            told(&[10001, 10000], &[10443, 10444]).as_deref(),
            Some("UDP 10000-10001, TCP 10443-10444")
        );
        assert_eq!(
            told(&[4000, 39000], &[]).as_deref(),
            Some("UDP 4000, 39000")
        );
        assert_eq!(told(&[], &[]), None);
    }
}

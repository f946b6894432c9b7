//! The gRPC `Attach` endpoint that media nodes dial.
//!
//! A node's first message must be `Register`; anything else, or a registration that does not
//! make sense, ends the stream with `InvalidArgument` and a message saying why. The
//! registration must carry a fresh claim to its node id signed with the grant key (see
//! [`treffpunkt_proto::grant`]), or it is refused with `Unauthenticated`: only a process that
//! holds the key the control plane gives its nodes becomes one. After that the
//! stream's reader hands signals to sessions and keeps the node's load, and a writer task
//! drains the node's outgoing queue. A registration under the id of a node whose stream is up is
//! refused with `AlreadyExists`: the live node and its calls stay as they are. A node is
//! forgotten only when its own stream ends (and it does not come back within the grace); then
//! the clients of its sessions are told. HTTP/2 pings end the stream of a node that vanished
//! without closing it.
//!
//! When the port runs mutual TLS ([`super::tls::serve_tls`]), a registration must also be for the
//! pool that the node's certificate names, under an id of that pool (`<pool>:<name>`,
//! [`identity::node_id`], or the name of a pod of that pool: a node of the release before), or it
//! is refused with `PermissionDenied`: a node of one pool can never take the id, and so the place
//! and the calls, of a node of another.
//!
//! The answer names this replica and, then and whenever they change, all replicas that serve
//! ([`super::replicas`]); a node that names this replica among those it has a stream to already
//! is refused with `Aborted` (it came through a shared address and tries again).
//!
//! [`serve`] runs the endpoint on a plain listener (standalone mode, on loopback or the club's
//! own network); a cluster's replicas serve it with [`super::tls::serve_tls`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};
use treffpunkt_proto::features::Features;
use treffpunkt_proto::grant::{SharedKeyring, now_unix_ms};
use treffpunkt_proto::identity;
use treffpunkt_proto::v1::{
    self, control_message::Kind as ControlKind, control_plane_server::ControlPlane,
    control_plane_server::ControlPlaneServer, node_message::Kind as NodeKind,
};

use super::{ClientEvent, Fleet, FleetError, Replicas};
use crate::domain::NodeId;

/// How long a node may take to register after opening its stream.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands queued for one node before senders wait.
const NODE_QUEUE: usize = 1024;
/// How often nodes report their load.
pub const LOAD_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// The longest node id accepted.
const MAX_NODE_ID_LEN: usize = 128;

/// Whether the cluster has a pod of pool `pool` (the second argument) named `name` (the
/// first): a node of the release before ids named their pool registers under its pod's name.
pub type PodOfPool = Arc<dyn Fn(String, String) -> BoxFuture<'static, bool> + Send + Sync>;

/// The `ControlPlane` gRPC service of one control-plane replica.
#[derive(Debug, Clone)]
pub struct AttachService {
    fleet: Arc<Fleet>,
    grant_keys: SharedKeyring,
    /// Whether a node must show a certificate that names its pool (the port runs mutual TLS).
    certificates: bool,
    /// Where an id that does not name its pool is looked up as a pod's.
    pods: Option<Pods>,
}

/// A [`PodOfPool`] the service asks.
#[derive(Clone)]
struct Pods(PodOfPool);

impl std::fmt::Debug for Pods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodOfPool")
    }
}

impl AttachService {
    /// A service that records attached nodes in `fleet` and admits those that prove they hold
    /// one of `grant_keys`.
    pub fn new(fleet: Arc<Fleet>, grant_keys: SharedKeyring) -> Self {
        Self {
            fleet,
            grant_keys,
            certificates: false,
            pods: None,
        }
    }

    /// The same, letting a node register only for the pool its TLS certificate names, under an
    /// id of that pool: `<pool>:<name>`, or the name of a pod of that pool as `pods` finds it
    /// (the nodes of the release before ids named their pool, while a fleet is upgraded).
    pub fn requiring_certificates(mut self, pods: PodOfPool) -> Self {
        self.certificates = true;
        self.pods = Some(Pods(pods));
        self
    }

    /// Whether the node's id is one of its pool's, when certificates are required: the pool's
    /// name begins it ([`identity::node_id`]), or a pod of that pool has it for its name.
    async fn check_id(&self, register: &v1::Register) -> Result<(), Status> {
        if !self.certificates || identity::name_in_pool(&register.node_id, &register.pool).is_some()
        {
            return Ok(());
        }
        if let Some(Pods(pod_of_pool)) = &self.pods
            && pod_of_pool(register.node_id.clone(), register.pool.clone()).await
        {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "a node of pool {:?} registers under an id that starts with \"{}:\"",
            register.pool, register.pool
        )))
    }

    /// Whether the client's certificate (`peer`, the leaf first) names the pool `register`
    /// is for, when certificates are required.
    fn check_certificate(
        &self,
        register: &v1::Register,
        peer: Option<&[CertificateDer<'static>]>,
    ) -> Result<(), Status> {
        if !self.certificates {
            return Ok(());
        }
        let leaf = peer.and_then(<[_]>::first).ok_or_else(|| {
            Status::unauthenticated("a media node must show the platform's certificate")
        })?;
        if !super::tls::certificate_names(leaf, &identity::pool(&register.pool)) {
            return Err(Status::permission_denied(format!(
                "the node's certificate is not for pool {:?}",
                register.pool
            )));
        }
        Ok(())
    }

    /// Whether `register` carries a fresh claim to its own node id and instance, signed with
    /// an accepted grant key.
    fn authenticate(&self, register: &v1::Register) -> Result<(), Status> {
        let proof = register.proof.as_ref().ok_or_else(|| {
            Status::unauthenticated("a media node must prove that it holds the grant key")
        })?;
        let claim = self
            .grant_keys
            .get()
            .open_attach(proof, now_unix_ms())
            .map_err(|error| Status::unauthenticated(format!("the node's proof: {error}")))?;
        if claim.node_id != register.node_id || claim.instance_id != register.instance_id {
            return Err(Status::unauthenticated(
                "the node's proof is for another node",
            ));
        }
        Ok(())
    }
}

impl AttachService {
    /// The registration in a stream's `first` message, if it is one, makes sense and carries
    /// the node's proof.
    fn registration(&self, first: Option<v1::NodeMessage>) -> Result<v1::Register, Status> {
        let register = match first.and_then(|message| message.kind) {
            Some(NodeKind::Register(register)) => register,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on Attach must be Register",
                ));
            }
        };
        validate(&register)?;
        if let Err(refusal) = self.authenticate(&register) {
            let node = &register.node_id;
            warn!(%node, reason = refusal.message(), "a registration was refused");
            return Err(refusal);
        }
        Ok(register)
    }

    /// What the endpoint makes of the messages of one node's stream, without a socket: the
    /// first must be a registration it admits; then the node is attached and every later
    /// message is handled as on a stream, and at the end the node is lost as when its stream
    /// ends. The fuzzer of the Attach messages and its regression tests drive it; returns the
    /// refusal, if any.
    pub async fn take_messages(&self, messages: Vec<v1::NodeMessage>) -> Result<(), Status> {
        let mut messages = messages.into_iter();
        let register = self.registration(messages.next())?;
        let node = NodeId(register.node_id.clone());
        let (to_node, _commands) = mpsc::channel(NODE_QUEUE);
        let attachment = self
            .fleet
            .attach(register, to_node.clone())
            .map_err(|error| refusal(&error))?;
        for message in messages {
            handle_node_message(&self.fleet, &node, &to_node, message).await;
        }
        if self.fleet.lose(&node, attachment) {
            self.fleet.expire(&node, attachment);
        }
        Ok(())
    }
}

/// What a node whose registration the fleet refused is told: a node of another pool that
/// claims a known node's id is refused its place, as one that claims a live node's id is.
fn refusal(error: &FleetError) -> Status {
    match error {
        FleetError::OtherPool { .. } => Status::permission_denied(error.to_string()),
        _ => Status::already_exists(error.to_string()),
    }
}

/// How often the server pings a node's connection, and how long it waits for the answer: a
/// node that vanished without closing its connection (a cut cable, a frozen host) is noticed
/// within their sum, so its sessions move and a restarted node with its id is let in again.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the `Attach` endpoint on `listener`, recording attached nodes in `fleet` that prove
/// they hold one of `grant_keys`, until the server fails; the failure is logged, as there is
/// nobody else to tell.
///
/// Each connection goes without Nagle's algorithm (tonic does not set it on connections it is
/// handed): the commands to a node are small messages, and one that waited for the
/// acknowledgement of the one before it waited for the node's delayed ACK, 40 ms, in the
/// middle of a join.
pub async fn serve(fleet: Arc<Fleet>, listener: TcpListener, grant_keys: SharedKeyring) {
    let service = AttachService::new(fleet, grant_keys);
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    serve_incoming(service, incoming).await;
}

/// Serves `service` on the connections of `incoming` (plain TCP, or TLS streams that went
/// through their handshake) until the server fails.
pub(super) async fn serve_incoming<S, IO>(service: AttachService, incoming: S)
where
    S: tokio_stream::Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
    IO: tonic::transport::server::Connected
        + tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + Unpin
        + Send
        + 'static,
{
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(ControlPlaneServer::new(service))
        .serve_with_incoming(incoming)
        .await;
    if let Err(error) = result {
        warn!(%error, "the gRPC server stopped");
    }
}

/// Checks a registration; the error says what is wrong with it.
fn validate(register: &v1::Register) -> Result<(), Status> {
    if register.node_id.is_empty() || register.node_id.len() > MAX_NODE_ID_LEN {
        return Err(Status::invalid_argument(format!(
            "node_id must be 1 to {MAX_NODE_ID_LEN} bytes"
        )));
    }
    // Every ticket of the node's sessions names its instance.
    if register.instance_id.is_empty() || register.instance_id.len() > MAX_NODE_ID_LEN {
        return Err(Status::invalid_argument(format!(
            "instance_id must be 1 to {MAX_NODE_ID_LEN} bytes"
        )));
    }
    if register.media_addresses.is_empty() {
        return Err(Status::invalid_argument(
            "a node must announce at least one media address",
        ));
    }
    for address in &register.media_addresses {
        if address.ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "media address {:?} is not an IP address",
                address.ip
            )));
        }
        if address.port == 0 || address.port > u32::from(u16::MAX) {
            return Err(Status::invalid_argument(format!(
                "media port {} is out of range",
                address.port
            )));
        }
    }
    if register.capacity.is_none_or(|c| c.max_participants == 0) {
        return Err(Status::invalid_argument(
            "capacity.max_participants must be positive",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl ControlPlane for AttachService {
    type AttachStream = ReceiverStream<Result<v1::ControlMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<v1::NodeMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let peer = request.peer_certs();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register within 10 s"))??;
        let register = self.registration(first)?;
        let node = NodeId(register.node_id.clone());
        let checked = match self.check_certificate(&register, peer.as_deref().map(Vec::as_slice)) {
            Ok(()) => self.check_id(&register).await,
            refused => refused,
        };
        if let Err(refusal) = checked {
            warn!(%node, pool = %register.pool, reason = refusal.message(), "a registration was refused");
            return Err(refusal);
        }
        let replicas = self.fleet.replicas();
        if register
            .attached_replicas
            .iter()
            .any(|r| r == replicas.id())
        {
            // The node came through a shared address again; it tries once more for another
            // replica.
            return Err(Status::aborted(
                "the node has a stream to this replica already",
            ));
        }

        let (to_node, mut queued) = mpsc::channel::<v1::ControlMessage>(NODE_QUEUE);
        let (outbound, stream) = mpsc::channel(NODE_QUEUE);
        let registered = v1::ControlMessage::new(ControlKind::Registered(v1::Registered {
            load_report_interval_ms: LOAD_REPORT_INTERVAL.as_millis() as u32,
            replica: replicas.id().to_owned(),
            features: Features::ALL.names(),
        }));
        outbound
            .send(Ok(registered))
            .await
            .map_err(|_| Status::cancelled("node went away while registering"))?;
        tokio::spawn(tell_replicas(replicas.subscribe(), outbound.clone()));
        tokio::spawn(async move {
            while let Some(message) = queued.recv().await {
                if outbound.send(Ok(message)).await.is_err() {
                    break;
                }
            }
        });

        let (version, pool) = (register.version.clone(), register.pool.clone());
        let attachment = self
            .fleet
            .attach(register, to_node.clone())
            .map_err(|error| {
                warn!(%node, %error, "a registration of a node id was refused");
                refusal(&error)
            })?;
        info!(%node, %version, %pool, "media node attached");
        let fleet = self.fleet.clone();
        tokio::spawn(async move {
            loop {
                let message = match inbound.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(status) => {
                        warn!(%node, %status, "attach stream failed");
                        break;
                    }
                };
                handle_node_message(&fleet, &node, &to_node, message).await;
            }
            if fleet.lose(&node, attachment) {
                info!(%node, "media node stream lost; waiting for it to come back");
                tokio::time::sleep(super::NODE_LOSS_GRACE).await;
                fleet.expire(&node, attachment);
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// Tells a node's stream the replicas that serve, now and whenever they change, until the stream
/// ends.
async fn tell_replicas(
    mut replicas: watch::Receiver<Vec<String>>,
    outbound: mpsc::Sender<Result<v1::ControlMessage, Status>>,
) {
    loop {
        let ids = replicas.borrow_and_update().clone();
        if outbound.send(Ok(Replicas::message(ids))).await.is_err() {
            return;
        }
        tokio::select! {
            changed = replicas.changed() => if changed.is_err() { return },
            () = outbound.closed() => return,
        }
    }
}

async fn handle_node_message(
    fleet: &Fleet,
    node: &NodeId,
    to_node: &mpsc::Sender<v1::ControlMessage>,
    message: v1::NodeMessage,
) {
    match message.kind {
        Some(NodeKind::Signal(v1::SessionSignal {
            session_id,
            signal: Some(signal),
        })) => {
            if !fleet.deliver(node, &session_id, ClientEvent::Signal(signal)) {
                warn!(%node, "client does not keep up; closing its session");
                let close = v1::CloseSession {
                    session_id,
                    reason: v1::CloseReason::ConnectionLost as i32,
                };
                let _ = to_node
                    .send(v1::ControlMessage::new(ControlKind::CloseSession(close)))
                    .await;
            }
        }
        Some(NodeKind::SessionClosed(closed)) => {
            let reason = v1::CloseReason::try_from(closed.reason).unwrap_or_default();
            fleet.deliver(node, &closed.session_id, ClientEvent::Closed(reason));
        }
        Some(NodeKind::ResumeAnswer(answer)) => fleet.answer_resume(node, answer),
        Some(NodeKind::Load(load)) => fleet.update_load(node, load),
        Some(NodeKind::Relay(relay)) => fleet.relay(node, relay),
        Some(NodeKind::Draining(draining)) => {
            info!(%node, move_sessions = draining.move_sessions, "media node is draining");
            fleet.mark_draining(node, draining.move_sessions);
        }
        Some(NodeKind::Register(_)) => warn!(%node, "ignoring a second Register"),
        Some(NodeKind::Signal(_)) | None => warn!(%node, "ignoring an empty node message"),
    }
}

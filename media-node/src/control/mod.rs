//! The `Attach` client: the node dials every control-plane replica and keeps one stream up to
//! each.
//!
//! The control plane is given as one or more addresses. A name that resolves to several
//! addresses (in Kubernetes, the headless Service of the operator's replicas) is looked up again
//! every few seconds, so replicas that come and go are followed. Each stream registers the node
//! (id, pool, capacity, media addresses, version, the rooms it hosts) and reconnects with
//! backoff when it breaks. With a certificate (`--attach-tls-dir`, a cluster's pools) every
//! connection runs mutual TLS: the node shows its pool's certificate and checks the control
//! plane's against the platform's authority; the files are read anew for each connection.
//!
//! Each replica names itself when it answers and tells the node the ids of every replica that
//! serves. A node that reaches them all through one shared address (a partner's site, behind a
//! load balancer that shows it one replica per connection) dials that address again, telling the
//! replicas it has already, until it has a stream to each: a participant's signals go through the
//! replica whose gateway the participant reached, so every replica must know the node.
//!
//! Every session belongs to the replica whose gateway holds the participant's WebSocket: its
//! signals go back over that replica's stream. When that stream is down, they are held until it
//! comes back or the client resumes its session through another replica; what a full stream
//! cannot take waits too, in order, as do a spanning room's messages to its other nodes (`links`).
//! Media never passes through the control plane, so a control-plane restart does not disturb
//! running calls.
//!
//! While a fleet is upgraded, replicas and nodes of two releases meet: the node names what it
//! understands when it registers, and learns what each replica and each link's other node
//! understands; what the core says in a newer form goes to the others in the older one
//! (`forms`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity as TlsIdentity};
use tracing::{debug, info, warn};
use treffpunkt_proto::features::Features;
use treffpunkt_proto::grant::{Keyring, SharedKeyring, now_unix_ms};
use treffpunkt_proto::identity;
use treffpunkt_proto::v1::{
    self, control_message::Kind as ControlKind, control_plane_client::ControlPlaneClient,
    node_message::Kind as NodeKind,
};

use crate::AbortOnDrop;
use crate::error::{Error, Result};
use crate::node::{Admission, Command, Event, Resume};
use crate::status::NodeStatus;

use self::links::{RoomLink, Shared, lock};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often names of the control plane are looked up again.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
/// Messages waiting for one replica's stream: as many as the node's own queue of events
/// (`udp::EVENT_QUEUE`), since a large room's bursts (a notice to each participant per newcomer,
/// the roster relayed to a node the room spreads to) pass through here whole. 1,024 held a
/// joiner's welcome back in a livestream of 500 over three nodes.
const STREAM_QUEUE: usize = 65_536;

/// Who the node is, as it tells the control plane.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Unique in the fleet.
    pub node_id: String,
    /// New with every start of the node.
    pub instance_id: String,
    /// The MediaPool; empty in standalone mode.
    pub pool: String,
    /// Participants the node accepts.
    pub max_participants: u32,
    /// Where clients reach the node's media port.
    pub media_addresses: Vec<v1::MediaAddress>,
    /// The folder with the node's certificate for the control plane's mutual TLS (`ca.crt`,
    /// `tls.crt`, `tls.key`); the node attaches without TLS when there is none.
    pub certificate: Option<std::path::PathBuf>,
}

/// Checks an `OpenSession` for node `node_id` and turns it into an admission.
fn admit(
    open: v1::OpenSession,
    key: &Keyring,
    node_id: &str,
) -> std::result::Result<Admission, String> {
    let token = open.grant.ok_or("the session has no grant")?;
    let grant = key
        .open_grant(&token, node_id, now_unix_ms())
        .map_err(|error| error.to_string())?;
    let room = grant.room.ok_or("the grant names no room")?;
    if room.tenant.is_empty() || room.name.is_empty() || grant.participant_id.is_empty() {
        return Err("the grant is incomplete".to_owned());
    }
    if !grant.can_publish && !grant.can_subscribe {
        return Err("the grant allows nothing".to_owned());
    }
    Ok(Admission {
        session_id: open.session_id,
        room: room.to_string(),
        participant_id: grant.participant_id,
        display_name: grant.display_name,
        max_participants: grant.max_participants,
        last_n: grant.video_last_n,
        continues: open.continues,
        moderator: grant.moderator,
        lobby: grant.lobby,
        first_moderates: grant.first_moderates,
    })
}

/// The message that tells the control plane about a node event.
fn event_message(event: Event) -> v1::NodeMessage {
    v1::NodeMessage::new(match event {
        Event::Signal { session_id, signal } => NodeKind::Signal(v1::SessionSignal {
            session_id,
            signal: Some(signal),
        }),
        Event::Closed {
            session_id,
            reason,
            detail,
        } => NodeKind::SessionClosed(v1::SessionClosed {
            session_id,
            reason: reason as i32,
            detail,
        }),
        Event::ResumeAnswer {
            resume,
            outcome,
            generation,
        } => NodeKind::ResumeAnswer(v1::ResumeAnswer {
            session_id: resume.session_id,
            request_id: resume.request_id,
            outcome: outcome as i32,
            generation,
        }),
        Event::Load(load) => NodeKind::Load(load),
        Event::Relay {
            link,
            room,
            to_node,
            message,
        } => NodeKind::Relay(v1::RoomRelay {
            room,
            to_node,
            ..relay::to_wire(link, message)
        }),
        Event::Draining {
            move_sessions,
            grace,
        } => NodeKind::Draining(v1::Draining {
            move_sessions,
            deadline_unix_ms: now_unix_ms() + grace.as_millis() as u64,
        }),
    })
}

/// How an attempt to attach ended.
#[derive(Debug, PartialEq, Eq)]
enum Attached {
    /// The stream was up and has ended.
    Ended,
    /// The address led to a replica this node has a stream to already.
    Known,
}

/// Keeps the node attached to every replica named by `endpoints` until `events` closes.
pub async fn run(
    endpoints: Vec<String>,
    identity: Identity,
    grant_key: SharedKeyring,
    commands: mpsc::Sender<Command>,
    mut events: mpsc::Receiver<Event>,
    status: NodeStatus,
) -> Result<()> {
    let links: Shared = Arc::default();
    let context = Arc::new(LinkContext {
        identity,
        grant_key,
        commands,
        links: links.clone(),
        status,
    });
    // Dropped (the node stopped, or this future was), it ends every stream task.
    let discovery = AbortOnDrop(tokio::spawn(discover(endpoints, context.clone())));
    while let Some(event) = events.recv().await {
        let mut links = lock(&links);
        match event {
            Event::Signal { session_id, signal } => {
                // A replica of an earlier release hears of several newcomers one by one.
                let features = links.session_features(&session_id);
                for signal in forms::signal(signal, features) {
                    let message = event_message(Event::Signal {
                        session_id: session_id.clone(),
                        signal,
                    });
                    links.route(&session_id, message);
                }
            }
            Event::Closed { ref session_id, .. } => {
                let session = session_id.clone();
                links.close(&session, event_message(event), std::time::Instant::now());
            }
            Event::ResumeAnswer {
                ref resume,
                outcome,
                ..
            } => {
                let (session, via) = (resume.session_id.clone(), resume.via.clone());
                // Only the replica that asked hears the answer; only an accepted resume moves
                // the session (and what was held for it) to that replica.
                if let Some(stream) = links.up.get(&via) {
                    let _ = stream.try_send(event_message(event));
                }
                if outcome == v1::ResumeOutcome::Resumed {
                    links.bind(&session, &via, None);
                    links.flush(&via);
                }
            }
            Event::Relay {
                link,
                room,
                to_node,
                message,
            } => {
                // A node of an earlier release hears of a roster one participant at a time.
                for message in forms::relay(message, links.link_features(link.0)) {
                    let (room, to_node) = (room.clone(), to_node.clone());
                    let event = Event::Relay {
                        link,
                        room,
                        to_node,
                        message,
                    };
                    links.relay(link.0, event_message(event));
                }
            }
            Event::Load(_) | Event::Draining { .. } => {
                links.retry_held(std::time::Instant::now());
                let message = event_message(event);
                if let Some(NodeKind::Draining(draining)) = &message.kind {
                    // Told again to every replica the node attaches to later.
                    links.draining = Some(*draining);
                }
                for stream in links.up.values() {
                    let _ = stream.try_send(message.clone());
                }
            }
        }
    }
    // The node has stopped: give the streams a moment to deliver its last words (sessions
    // closed at the end of a drain) before the process goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(discovery);
    Ok(())
}

struct LinkContext {
    identity: Identity,
    grant_key: SharedKeyring,
    commands: mpsc::Sender<Command>,
    links: Shared,
    status: NodeStatus,
}

/// Turns each configured endpoint into the addresses of the replicas behind it and keeps one
/// stream task per address; while replicas that serve have no stream, one more task per missing
/// replica dials the addresses again (a shared address leads to another replica each time).
async fn discover(endpoints: Vec<String>, context: Arc<LinkContext>) {
    let mut tasks: HashMap<String, AbortOnDrop<()>> = HashMap::new();
    let mut extra: Vec<AbortOnDrop<()>> = Vec::new();
    let mut turn = 0usize;
    loop {
        let mut current = Vec::new();
        for endpoint in &endpoints {
            current.extend(resolve(endpoint).await);
        }
        tasks.retain(|address, _| {
            let keep = current.contains(address);
            if !keep {
                info!(%address, "control-plane replica gone");
            }
            keep
        });
        for address in &current {
            tasks.entry(address.clone()).or_insert_with(|| {
                AbortOnDrop(tokio::spawn(keep_attached(
                    address.clone(),
                    context.clone(),
                    false,
                )))
            });
        }
        extra.retain(|task| !task.0.is_finished());
        let (up, missing) = {
            let links = lock(&context.links);
            (links.up.len(), links.missing())
        };
        context.status.set_attached(up > 0);
        while extra.len() < missing && !current.is_empty() {
            let address = current[turn % current.len()].clone();
            turn += 1;
            debug!(%address, missing, "dialling again for a replica without a stream");
            extra.push(AbortOnDrop(tokio::spawn(keep_attached(
                address,
                context.clone(),
                true,
            ))));
        }
        tokio::time::sleep(DISCOVERY_INTERVAL).await;
    }
}

/// The replica addresses behind `endpoint` (`http://host:port`): itself when the host is an IP
/// address, each address the name resolves to otherwise.
async fn resolve(endpoint: &str) -> Vec<String> {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        warn!(%endpoint, "control-plane addresses start with http://");
        return Vec::new();
    };
    let authority = rest.trim_end_matches('/');
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    if host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        return vec![format!("http://{authority}")];
    }
    match tokio::net::lookup_host(authority).await {
        Ok(addresses) => {
            let mut found: Vec<String> = addresses.map(|a| format!("http://{a}")).collect();
            found.sort();
            found.dedup();
            found
        }
        Err(error) => {
            debug!(%endpoint, %error, "cannot resolve the control plane yet");
            Vec::new()
        }
    }
}

/// Keeps a stream up to a replica at `address`; an `extra` one only while replicas that serve
/// have no stream.
async fn keep_attached(address: String, context: Arc<LinkContext>, extra: bool) {
    let mut backoff = MIN_BACKOFF;
    // Failures in a row: the first few are a replica restarting and said quietly; then the
    // operator hears of it (a wrong certificate or key, an address that never answers), once
    // a minute at most.
    let (mut failures, mut told) = (0u32, None::<std::time::Instant>);
    loop {
        let started = std::time::Instant::now();
        let result = attach_once(&address, &context).await;
        let up = lock(&context.links).up.len();
        context.status.set_attached(up > 0);
        match result {
            Ok(Attached::Ended) => {
                failures = 0;
                warn!(%address, "attach stream ended; reconnecting");
            }
            Ok(Attached::Known) => {
                failures = 0;
                debug!(%address, "reached a replica this node has a stream to");
                backoff = backoff.max(Duration::from_secs(1));
            }
            Err(error) => {
                failures += 1;
                if failures >= 5 && told.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    warn!(%address, %error, failures, "cannot attach to the control plane");
                    told = Some(std::time::Instant::now());
                } else {
                    debug!(%address, %error, "attaching failed");
                }
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        if extra && lock(&context.links).missing() == 0 {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The TLS of a connection to the control plane: the platform's authority (`ca.crt`) and the
/// node's certificate and key (`tls.crt`, `tls.key`) from `dir`, read anew for every connection,
/// so that a renewed certificate is used from the next one on.
fn tls_config(dir: &std::path::Path) -> Result<ClientTlsConfig> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|error| {
            Error::Control(format!("reading {}: {error}", dir.join(name).display()))
        })
    };
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")?))
        .identity(TlsIdentity::from_pem(read("tls.crt")?, read("tls.key")?))
        .domain_name(identity::CONTROL_PLANE))
}

/// What the node tells a replica when it attaches: who it is, what it hosts and understands,
/// with a fresh proof that it holds the grant key.
fn registration(
    context: &LinkContext,
    hosted_rooms: Vec<v1::HostedRoom>,
    draining: Option<v1::Draining>,
    attached_replicas: Vec<String>,
) -> v1::Register {
    let identity = &context.identity;
    v1::Register {
        node_id: identity.node_id.clone(),
        pool: identity.pool.clone(),
        capacity: Some(v1::Capacity {
            max_participants: identity.max_participants,
        }),
        media_addresses: identity.media_addresses.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        features: Features::ALL.names(),
        hosted_rooms,
        instance_id: identity.instance_id.clone(),
        proof: Some(context.grant_key.get().sign_attach(&v1::AttachClaim {
            node_id: identity.node_id.clone(),
            instance_id: identity.instance_id.clone(),
            issued_at_unix_ms: now_unix_ms(),
        })),
        attached_replicas,
        draining,
    }
}

async fn attach_once(address: &str, context: &LinkContext) -> Result<Attached> {
    let endpoint = match &context.identity.certificate {
        Some(dir) => Endpoint::from_shared(address.replacen("http://", "https://", 1))
            .map_err(|error| {
                Error::Control(format!("bad control-plane address {address}: {error}"))
            })?
            .tls_config(tls_config(dir)?)
            .map_err(|error| Error::Control(format!("the node's TLS: {error}")))?,
        None => Endpoint::from_shared(address.to_owned()).map_err(|error| {
            Error::Control(format!("bad control-plane address {address}: {error}"))
        })?,
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // A control plane that vanished without closing the connection is noticed, and the
        // node attaches again (to another replica, if there is one).
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|error| Error::Control(error.to_string()))?;
    let mut client = ControlPlaneClient::new(channel);
    let (outbound, outbound_stream) = mpsc::channel::<v1::NodeMessage>(STREAM_QUEUE);
    let (hosted_rooms, draining, attached_replicas) = {
        let links = lock(&context.links);
        let attached: Vec<String> = links.up.keys().cloned().collect();
        (links.hosted_rooms(), links.draining, attached)
    };
    let register = registration(context, hosted_rooms, draining, attached_replicas);
    outbound
        .send(v1::NodeMessage::new(NodeKind::Register(register)))
        .await
        .map_err(|_| Error::Control("outbound stream closed".into()))?;
    // Said again for a control plane that does not read it from the registration.
    if let Some(draining) = draining.map(NodeKind::Draining) {
        let _ = outbound.send(v1::NodeMessage::new(draining)).await;
    }
    let mut inbound = match client.attach(ReceiverStream::new(outbound_stream)).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Aborted => return Ok(Attached::Known),
        Err(status) => {
            // Not a passing failure: the node is misconfigured (another grant key, a clock
            // far off, an id in use) and must say so where its operator looks.
            use tonic::Code;
            if matches!(
                status.code(),
                Code::Unauthenticated | Code::AlreadyExists | Code::InvalidArgument
            ) {
                warn!(%address, reason = status.message(), "the control plane refused the registration");
            }
            return Err(Error::Control(status.to_string()));
        }
    };
    let (link, features) = match inbound.message().await {
        Ok(Some(v1::ControlMessage {
            kind: Some(ControlKind::Registered(registered)),
        })) if !registered.replica.is_empty() => (
            registered.replica,
            Features::from_names(&registered.features),
        ),
        Ok(Some(_)) => (address.to_owned(), Features::default()),
        Ok(None) => return Ok(Attached::Ended),
        Err(status) => return Err(Error::Control(status.to_string())),
    };
    let mut stream = Stream {
        link,
        links: &context.links,
    };
    {
        let mut links = lock(&context.links);
        if links.up.contains_key(&stream.link) {
            // Two attempts through a shared address reached the same replica at once.
            stream.link.clear();
            return Ok(Attached::Known);
        }
        // A drain that began after the registration was written reached only the streams that
        // were up then: this one hears of it now. Later ones reach it with the others.
        if links.draining != draining
            && let Some(now_draining) = links.draining
        {
            let _ = outbound.try_send(v1::NodeMessage::new(NodeKind::Draining(now_draining)));
        }
        links.stream_up(&stream.link, outbound.clone(), features);
    }
    context.status.set_attached(true);
    let replica = &stream.link;
    info!(node = %context.identity.node_id, %address, %replica, "attached to a control-plane replica");
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(Attached::Ended),
            Err(status) => return Err(Error::Control(status.to_string())),
        };
        let Some(command) = command_for(message, &stream.link, context, &outbound).await else {
            continue;
        };
        if context.commands.send(command).await.is_err() {
            return Ok(Attached::Ended);
        }
    }
}

/// A stream that is up, under its replica's id: it is taken out of the links when it ends,
/// however it ends.
struct Stream<'a> {
    link: String,
    links: &'a Shared,
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        if !self.link.is_empty() {
            lock(self.links).stream_down(&self.link);
        }
    }
}

/// The command a message from the control plane asks of the node, if any. A session whose
/// grant does not hold is refused here, on the stream it came from.
async fn command_for(
    message: v1::ControlMessage,
    link: &str,
    context: &LinkContext,
    outbound: &mpsc::Sender<v1::NodeMessage>,
) -> Option<Command> {
    Some(match message.kind {
        Some(ControlKind::Registered(_)) => return None,
        Some(ControlKind::Replicas(replicas)) => {
            // Bounded: a control plane has a handful of replicas.
            let mut ids = replicas.ids;
            ids.truncate(64);
            lock(&context.links).replicas.insert(link.to_owned(), ids);
            return None;
        }
        Some(ControlKind::OpenSession(open)) => {
            let session_id = open.session_id.clone();
            match admit(open, &context.grant_key.get(), &context.identity.node_id) {
                Ok(admission) => {
                    lock(&context.links).bind(&session_id, link, Some(admission.room.clone()));
                    Command::Open(admission)
                }
                Err(detail) => {
                    warn!(%detail, "refusing a session");
                    let refusal = event_message(Event::Closed {
                        session_id,
                        reason: v1::CloseReason::Refused,
                        detail,
                    });
                    let _ = outbound.send(refusal).await;
                    return None;
                }
            }
        }
        Some(ControlKind::Signal(v1::SessionSignal {
            session_id,
            signal: Some(signal),
        })) => {
            lock(&context.links).bind(&session_id, link, None);
            Command::Signal { session_id, signal }
        }
        // The session stays with its replica until the node accepts the ticket.
        Some(ControlKind::ResumeSession(resume)) => Command::Resume(Resume {
            session_id: resume.session_id,
            node_instance: resume.node_instance,
            generation: resume.generation,
            request_id: resume.request_id,
            via: link.to_owned(),
        }),
        Some(ControlKind::CloseSession(close)) => Command::Close {
            session_id: close.session_id,
        },
        Some(ControlKind::CloseRoom(close)) => match close.room {
            Some(room) => Command::CloseRoom {
                room: room.to_string(),
            },
            None => return None,
        },
        Some(ControlKind::Drain(drain)) => Command::Drain {
            move_sessions: drain.move_sessions,
            grace: Duration::from_secs(u64::from(drain.grace_seconds)),
            keep_running: drain.keep_running,
        },
        Some(ControlKind::OpenLink(open)) => match (
            Features::from_names(&open.peer_features),
            relay::link_spec(open),
        ) {
            (features, Ok(spec)) => {
                let mut links = lock(&context.links);
                let room_link = RoomLink {
                    via: link.to_owned(),
                    peer_features: features,
                };
                links.room_links.insert(spec.link.0, room_link);
                drop(links);
                Command::OpenLink(spec)
            }
            (_, Err(detail)) => {
                warn!(%detail, "refusing a link");
                return None;
            }
        },
        Some(ControlKind::CloseLink(close)) => {
            let mut links = lock(&context.links);
            links.room_links.remove(&close.link_id);
            links.held_relays.remove(&close.link_id);
            drop(links);
            Command::CloseLink {
                link: crate::core::LinkId(close.link_id),
            }
        }
        Some(ControlKind::Relayed(relayed)) => match relay::from_wire(relayed) {
            Ok((link, message)) => Command::Relayed { link, message },
            Err(detail) => {
                warn!(%detail, "dropping a relayed message");
                return None;
            }
        },
        Some(ControlKind::Signal(_)) | None => return None,
    })
}

mod forms;
mod links;
#[cfg(test)]
mod mixed_tests;
pub(crate) mod relay;
#[cfg(test)]
mod tests;

//! The `Attach` client: the node dials the control plane and keeps its stream up.
//!
//! On every (re)connection the node registers (id, pool, capacity, media addresses, version).
//! Then it turns the control plane's messages into [`Command`]s for the run loop, checking each
//! participant's grant first, and sends the loop's [`Report`]s back. When the stream breaks, it
//! reconnects with exponential backoff; running calls are not disturbed, because media never
//! passes through the control plane.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::{info, warn};
use treffpunkt_proto::grant::GrantKey;
use treffpunkt_proto::v1::{
    self, control_message::Kind as ControlKind, control_plane_client::ControlPlaneClient,
    node_message::Kind as NodeKind,
};

use crate::error::{Error, Result};
use crate::health::Attached;
use crate::transport::{Admission, Command, Report};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Who the node is, as it tells the control plane.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Unique in the fleet.
    pub node_id: String,
    /// The MediaPool; empty in standalone mode.
    pub pool: String,
    /// Participants the node accepts.
    pub max_participants: u32,
    /// Where clients reach the node's media port.
    pub media_addresses: Vec<v1::MediaAddress>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Checks an `OpenSession` and turns it into an admission.
fn admit(open: v1::OpenSession, key: Option<&GrantKey>) -> std::result::Result<Admission, String> {
    let grant = open.grant.ok_or("the session has no grant")?;
    if let Some(key) = key {
        key.verify(&grant, &open.grant_signature, unix_ms())
            .map_err(|error| error.to_string())?;
    }
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
    })
}

fn report_message(report: Report) -> v1::NodeMessage {
    v1::NodeMessage::new(match report {
        Report::Signal { session_id, signal } => NodeKind::Signal(v1::SessionSignal {
            session_id,
            signal: Some(signal),
        }),
        Report::Closed {
            session_id,
            reason,
            detail,
        } => NodeKind::SessionClosed(v1::SessionClosed {
            session_id,
            reason: reason as i32,
            detail,
        }),
        Report::Load(load) => NodeKind::Load(load),
    })
}

/// Keeps the node attached to the control plane at `endpoint` until `reports` closes.
pub async fn run(
    endpoint: String,
    identity: Identity,
    grant_key: Option<GrantKey>,
    commands: mpsc::Sender<Command>,
    mut reports: mpsc::UnboundedReceiver<Report>,
    attached: Attached,
) -> Result<()> {
    let endpoint = Endpoint::from_shared(endpoint.clone())
        .map_err(|error| Error::Control(format!("bad control-plane address {endpoint}: {error}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let mut backoff = MIN_BACKOFF;
    loop {
        let result = attach_once(
            &endpoint,
            &identity,
            grant_key.as_ref(),
            &commands,
            &mut reports,
            &attached,
        )
        .await;
        attached.set(false);
        match result {
            Ok(Finished::Shutdown) => return Ok(()),
            Ok(Finished::StreamEnded) => {
                warn!("attach stream ended; reconnecting");
                backoff = MIN_BACKOFF;
            }
            Err(error) => warn!(%error, "attaching to the control plane failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Finished {
    Shutdown,
    StreamEnded,
}

async fn attach_once(
    endpoint: &Endpoint,
    identity: &Identity,
    grant_key: Option<&GrantKey>,
    commands: &mpsc::Sender<Command>,
    reports: &mut mpsc::UnboundedReceiver<Report>,
    attached: &Attached,
) -> Result<Finished> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| Error::Control(error.to_string()))?;
    let mut client = ControlPlaneClient::new(channel);
    let (outbound, outbound_stream) = mpsc::channel::<v1::NodeMessage>(1024);
    let register = v1::Register {
        node_id: identity.node_id.clone(),
        pool: identity.pool.clone(),
        capacity: Some(v1::Capacity {
            max_participants: identity.max_participants,
        }),
        media_addresses: identity.media_addresses.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        hosted_rooms: Vec::new(),
    };
    outbound
        .send(v1::NodeMessage::new(NodeKind::Register(register)))
        .await
        .map_err(|_| Error::Control("outbound stream closed".into()))?;
    let mut inbound = client
        .attach(ReceiverStream::new(outbound_stream))
        .await
        .map_err(|status| Error::Control(status.to_string()))?
        .into_inner();
    info!(node = %identity.node_id, "attached to the control plane");
    attached.set(true);
    loop {
        tokio::select! {
            message = inbound.message() => {
                let message = match message {
                    Ok(Some(message)) => message,
                    Ok(None) => return Ok(Finished::StreamEnded),
                    Err(status) => return Err(Error::Control(status.to_string())),
                };
                let command = match message.kind {
                    Some(ControlKind::Registered(_)) => continue,
                    Some(ControlKind::OpenSession(open)) => {
                        let session_id = open.session_id.clone();
                        match admit(open, grant_key) {
                            Ok(admission) => Command::Open(admission),
                            Err(detail) => {
                                warn!(%detail, "refusing a session");
                                let refusal = report_message(Report::Closed {
                                    session_id,
                                    reason: v1::CloseReason::Refused,
                                    detail,
                                });
                                let _ = outbound.send(refusal).await;
                                continue;
                            }
                        }
                    }
                    Some(ControlKind::Signal(v1::SessionSignal { session_id, signal: Some(signal) })) => {
                        Command::Signal { session_id, signal }
                    }
                    Some(ControlKind::CloseSession(close)) => Command::Close { session_id: close.session_id },
                    Some(ControlKind::CloseRoom(close)) => match close.room {
                        Some(room) => Command::CloseRoom { room: room.to_string() },
                        None => continue,
                    },
                    Some(ControlKind::Signal(_)) | None => continue,
                };
                if commands.send(command).await.is_err() {
                    return Ok(Finished::Shutdown);
                }
            }
            report = reports.recv() => {
                let Some(report) = report else {
                    return Ok(Finished::Shutdown);
                };
                if outbound.send(report_message(report)).await.is_err() {
                    return Ok(Finished::StreamEnded);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(grant: v1::Grant, key: &GrantKey) -> v1::OpenSession {
        v1::OpenSession {
            session_id: "s1".into(),
            grant_signature: key.sign(&grant),
            grant: Some(grant),
        }
    }

    fn grant() -> v1::Grant {
        v1::Grant {
            room: Some(v1::RoomRef {
                tenant: "public".into(),
                name: "chor".into(),
            }),
            participant_id: "p1".into(),
            display_name: "Anna".into(),
            can_publish: true,
            can_subscribe: true,
            max_participants: 10,
            expires_at_unix_ms: unix_ms() + 60_000,
        }
    }

    #[test]
    fn only_signed_unexpired_grants_admit() {
        let key = GrantKey::new(b"a shared secret of enough length!");
        let admission = admit(open(grant(), &key), Some(&key)).unwrap();
        assert_eq!(admission.room, "public/chor");
        let other = GrantKey::new(b"some other secret of enough length");
        assert!(admit(open(grant(), &other), Some(&key)).is_err());
        let expired = v1::Grant {
            expires_at_unix_ms: 1,
            ..grant()
        };
        assert!(admit(open(expired, &key), Some(&key)).is_err());
        let roomless = v1::Grant {
            room: None,
            ..grant()
        };
        assert!(admit(open(roomless, &key), Some(&key)).is_err());
    }
}

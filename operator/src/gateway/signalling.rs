//! One participant's signalling WebSocket.
//!
//! The session runs in two phases. Until the person has joined, the socket accepts only `join`
//! messages; a refused join (bad name, full room) answers with an error and lets them try again.
//! Once joined, every message is converted to a `treffpunkt.v1` signal and relayed to the node
//! that hosts the room, and what the node says comes back the same way. Bad messages are
//! answered with an error and change nothing; the call goes on.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use ring::rand::{SecureRandom, SystemRandom};
use tracing::{debug, info, warn};
use treffpunkt_proto::v1;

use super::messages::{self, ClientMessage, ServerMessage};
use super::{GRANT_LIFETIME, Gateway};
use crate::domain::{self, DisplayName, DomainError, NodeId, Room, RoomKey, RoomName, TenantName};
use crate::fleet::ClientEvent;
use crate::store::{Store, StoreError};

/// The largest message the gateway reads; larger ones close the socket (code 1009).
const MAX_FRAME_BYTES: usize = 256 * 1024;
/// The largest message the gateway accepts; larger ones are answered with an error.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How long a socket may stay open without joining.
const JOIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Messages a client may send in a burst, and per second after that.
const MESSAGE_BURST: f64 = 100.0;
const MESSAGES_PER_SECOND: f64 = 20.0;

/// `GET /api/v1/rooms/{tenant}/{room}/signal`: upgrades to the signalling WebSocket.
pub async fn upgrade<S: Store>(
    State(gateway): State<Arc<Gateway<S>>>,
    Path((tenant, room)): Path<(String, String)>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let key = match (TenantName::new(tenant), RoomName::new(room)) {
        (Ok(tenant), Ok(name)) => RoomKey { tenant, name },
        (Err(error), _) | (_, Err(error)) => {
            return (axum::http::StatusCode::NOT_FOUND, error.to_string()).into_response();
        }
    };
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            Session::new(gateway, key, socket).run().await;
        })
}

/// A token bucket that keeps one client from flooding its node.
struct MessageBudget {
    tokens: f64,
    last: Instant,
}

impl MessageBudget {
    fn new() -> Self {
        Self {
            tokens: MESSAGE_BURST,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * MESSAGES_PER_SECOND).min(MESSAGE_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What reading one message from the socket gave.
enum Inbound {
    Message(ClientMessage),
    /// Answered with an error already; wait for the next.
    Refused,
    /// The socket is closed or broken.
    Gone,
}

struct Session<S> {
    gateway: Arc<Gateway<S>>,
    key: RoomKey,
    socket: WebSocket,
    budget: MessageBudget,
}

/// A random id of `bytes` bytes, hex-encoded.
fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the operating system's random source is available");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The client's error code for a domain refusal.
fn domain_code(error: &DomainError) -> &'static str {
    match error {
        DomainError::InvalidName { .. } => "room-not-found",
        DomainError::DisplayNameEmpty => "name-empty",
        DomainError::DisplayNameTooLong { .. } => "name-too-long",
        DomainError::DisplayNameInvalid => "name-invalid",
        DomainError::RoomFull { .. } => "room-full",
        DomainError::TenantSuspended => "tenant-suspended",
    }
}

/// Why a join was refused: the code for the client and a message for developers.
struct Refusal {
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<DomainError> for Refusal {
    fn from(error: DomainError) -> Self {
        Self::new(domain_code(&error), error.to_string())
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::RoomLimit(_) => Self::new("room-limit", error.to_string()),
            StoreError::NotFound(_) => Self::new("room-not-found", error.to_string()),
            other => {
                warn!(error = %other, "store failed during a join");
                Self::new("unavailable", "the service is unavailable, try again")
            }
        }
    }
}

impl<S: Store> Session<S> {
    fn new(gateway: Arc<Gateway<S>>, key: RoomKey, socket: WebSocket) -> Self {
        Self {
            gateway,
            key,
            socket,
            budget: MessageBudget::new(),
        }
    }

    async fn send(&mut self, message: &ServerMessage) -> bool {
        let text = match serde_json::to_string(message) {
            Ok(text) => text,
            Err(error) => {
                warn!(%error, "could not encode a message for the client");
                return true;
            }
        };
        self.socket.send(Message::Text(text.into())).await.is_ok()
    }

    async fn refuse(&mut self, code: &str, message: impl Into<String>) -> bool {
        self.send(&ServerMessage::error(code, message)).await
    }

    /// Reads the next client message, answering bad ones with an error.
    async fn receive(&mut self) -> Inbound {
        let frame = match self.socket.recv().await {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                debug!(%error, "signalling socket failed");
                let close = CloseFrame {
                    code: axum::extract::ws::close_code::SIZE,
                    reason: Utf8Bytes::from_static("message too large or malformed"),
                };
                let _ = self.socket.send(Message::Close(Some(close))).await;
                return Inbound::Gone;
            }
            None => return Inbound::Gone,
        };
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(_) => return Inbound::Gone,
            Message::Ping(_) | Message::Pong(_) => return Inbound::Refused,
            Message::Binary(_) => {
                return self
                    .refused("bad-message", "messages must be JSON text")
                    .await;
            }
        };
        if !self.budget.take(Instant::now()) {
            return self
                .refused("too-many-messages", "slow down: too many messages")
                .await;
        }
        if text.len() > MAX_MESSAGE_BYTES {
            return self
                .refused(
                    "message-too-large",
                    format!("messages may be at most {MAX_MESSAGE_BYTES} bytes"),
                )
                .await;
        }
        match serde_json::from_str::<ClientMessage>(&text) {
            Ok(message) => Inbound::Message(message),
            Err(error) => self.refused("bad-message", error.to_string()).await,
        }
    }

    async fn refused(&mut self, code: &str, message: impl Into<String>) -> Inbound {
        if self.refuse(code, message).await {
            Inbound::Refused
        } else {
            Inbound::Gone
        }
    }

    async fn run(mut self) {
        let deadline = tokio::time::sleep(JOIN_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            let inbound = tokio::select! {
                inbound = self.receive() => inbound,
                () = &mut deadline => return,
            };
            let (name, audio_muted, video_muted) = match inbound {
                Inbound::Gone => return,
                Inbound::Refused => continue,
                Inbound::Message(ClientMessage::Join {
                    name,
                    audio_muted,
                    video_muted,
                }) => (name, audio_muted, video_muted),
                Inbound::Message(_) => {
                    if !self.refuse("not-joined", "join the room first").await {
                        return;
                    }
                    continue;
                }
            };
            match self.join(&name).await {
                Ok((node, room, name)) => {
                    self.relay(node, room, name, audio_muted, video_muted).await;
                    return;
                }
                Err(refusal) => {
                    if !self.refuse(refusal.code, refusal.message).await {
                        return;
                    }
                }
            }
        }
    }

    /// Checks the join and places the room; returns the node that hosts it.
    async fn join(&mut self, name: &str) -> Result<(NodeId, Room, DisplayName), Refusal> {
        let name = DisplayName::new(name)?;
        let gateway = self.gateway.clone();
        let store = &gateway.store;
        let tenant = store
            .tenant(&self.key.tenant)
            .await?
            .ok_or_else(|| Refusal::new("room-not-found", "no such space"))?;
        let mut room = match store.room(&self.key).await? {
            Some(room) => room,
            None if tenant.policy.adhoc_rooms => {
                match store.create_room(Room::adhoc(self.key.clone())).await {
                    Ok(room) => room,
                    Err(StoreError::AlreadyExists(_)) => store
                        .room(&self.key)
                        .await?
                        .ok_or_else(|| Refusal::new("room-not-found", "the room was removed"))?,
                    Err(error) => return Err(error.into()),
                }
            }
            None => return Err(Refusal::new("room-not-found", "no such room")),
        };
        domain::admit(&tenant, &room, gateway.fleet.presence(&self.key))?;
        debug!(room = %self.key, participant = %name, "join admitted");
        // Placement: keep a live node; otherwise choose one and record it, retrying when
        // another gateway placed the room at the same time.
        for _ in 0..5 {
            if let Some(node) = room.node.clone().filter(|n| gateway.fleet.is_available(n)) {
                return Ok((node, room, name));
            }
            let nodes = gateway.fleet.nodes();
            let chosen = domain::choose_node(&nodes).ok_or_else(|| {
                Refusal::new("platform-full", "the platform is full, try again later")
            })?;
            match store
                .place_room(&self.key, &room.revision, Some(chosen.id.clone()))
                .await
            {
                Ok(placed) => {
                    info!(room = %self.key, node = %chosen.id, "room placed");
                    return Ok((chosen.id.clone(), placed, name));
                }
                Err(StoreError::Conflict(_)) => {
                    room = store
                        .room(&self.key)
                        .await?
                        .ok_or_else(|| Refusal::new("room-not-found", "the room was removed"))?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(Refusal::new(
            "unavailable",
            "could not place the room, try again",
        ))
    }

    /// Relays signalling between the joined client and its node until either side ends.
    async fn relay(
        &mut self,
        node: NodeId,
        room: Room,
        name: DisplayName,
        audio_muted: bool,
        video_muted: bool,
    ) {
        let gateway = self.gateway.clone();
        let tenant = gateway.store.tenant(&self.key.tenant).await.ok().flatten();
        let max_participants = tenant.map_or(0, |tenant| room.participant_limit(&tenant));
        let session_id = random_id(16);
        let grant = v1::Grant {
            room: Some(v1::RoomRef {
                tenant: self.key.tenant.to_string(),
                name: self.key.name.to_string(),
            }),
            participant_id: random_id(8),
            display_name: name.to_string(),
            can_publish: true,
            can_subscribe: true,
            max_participants,
            expires_at_unix_ms: unix_ms(SystemTime::now() + GRANT_LIFETIME),
        };
        let open = v1::OpenSession {
            session_id: session_id.clone(),
            grant_signature: gateway.grant_key.sign(&grant),
            grant: Some(grant),
        };
        let mut events = match gateway
            .fleet
            .open_session(&node, self.key.clone(), open)
            .await
        {
            Ok(events) => events,
            Err(error) => {
                warn!(%error, "could not open a session");
                self.refuse("unavailable", "the media node is unavailable, try again")
                    .await;
                return;
            }
        };
        // The join's own media state goes to the node as the session's first signal.
        let initial = ClientMessage::Media {
            audio_muted,
            video_muted,
        };
        if let Ok(signal) = messages::to_signal(initial) {
            let _ = gateway.fleet.signal(&session_id, signal).await;
        }
        let reason = loop {
            tokio::select! {
                inbound = self.receive() => match inbound {
                    Inbound::Gone => break v1::CloseReason::Left,
                    Inbound::Refused => {}
                    Inbound::Message(message) => {
                        let leaving = matches!(message, ClientMessage::Leave);
                        match messages::to_signal(message) {
                            Ok(signal) => {
                                if gateway.fleet.signal(&session_id, signal).await.is_err() {
                                    self.send(&ServerMessage::Closed { reason: "connection-lost" }).await;
                                    break v1::CloseReason::ConnectionLost;
                                }
                            }
                            Err(error) => {
                                let code = match error {
                                    messages::RelayError::SdpTooLarge => "message-too-large",
                                    messages::RelayError::AlreadyJoined => "already-joined",
                                };
                                if !self.refuse(code, error.to_string()).await {
                                    break v1::CloseReason::Left;
                                }
                            }
                        }
                        if leaving {
                            break v1::CloseReason::Left;
                        }
                    }
                },
                event = events.recv() => match event {
                    Some(ClientEvent::Signal(signal)) => {
                        if let Some(message) = messages::from_signal(signal)
                            && !self.send(&message).await
                        {
                            break v1::CloseReason::Left;
                        }
                    }
                    Some(ClientEvent::Closed(reason)) => {
                        let code = messages::close_reason_code(reason);
                        self.send(&ServerMessage::Closed { reason: code }).await;
                        break reason;
                    }
                    None => {
                        self.send(&ServerMessage::Closed { reason: "connection-lost" }).await;
                        break v1::CloseReason::ConnectionLost;
                    }
                },
            }
        };
        gateway.fleet.close_session(&session_id, reason).await;
        let _ = self.socket.send(Message::Close(None)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_burst_then_a_steady_rate() {
        let mut budget = MessageBudget::new();
        let start = budget.last;
        let allowed = (0..200).filter(|_| budget.take(start)).count();
        assert_eq!(allowed, MESSAGE_BURST as usize);
        assert!(!budget.take(start));
        assert!(
            budget.take(start + Duration::from_millis(100)),
            "refilled after 100 ms"
        );
    }
}

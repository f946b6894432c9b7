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
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use treffpunkt_proto::signalling::{
    ClientMessage, CloseReason, ServerMessage, from_signal, to_signal,
};
use treffpunkt_proto::{random, v1};

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

/// The participant a socket speaks for, once joined.
struct Member {
    participant_id: String,
    name: DisplayName,
    max_participants: u32,
    video_last_n: u32,
}

/// Where the participant's session runs now.
struct Attachment {
    node: NodeId,
    session_id: String,
    events: mpsc::Receiver<ClientEvent>,
}

/// How the relay ended.
enum Ending {
    /// The participant left or the session ended: tell the node.
    Close(v1::CloseReason),
    /// The socket dropped: the session lives on and may be resumed.
    Detach,
}

/// Moves of one session within [`MOVE_WINDOW`] after which the gateway gives up.
const MAX_MOVES: usize = 5;
const MOVE_WINDOW: Duration = Duration::from_secs(60);
/// How long a resume ticket stays valid.
const TICKET_LIFETIME: Duration = Duration::from_secs(12 * 3600);

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
            let started = match inbound {
                Inbound::Gone => return,
                Inbound::Refused => continue,
                Inbound::Message(ClientMessage::Join {
                    name,
                    audio_muted,
                    video_muted,
                }) => self.join(&name).await.map(|(member, attachment)| {
                    (member, attachment, Some((audio_muted, video_muted)))
                }),
                Inbound::Message(ClientMessage::Resume { ticket }) => self
                    .resume(&ticket)
                    .await
                    .map(|(member, attachment)| (member, attachment, None)),
                Inbound::Message(_) => {
                    if !self.refuse("not-joined", "join the room first").await {
                        return;
                    }
                    continue;
                }
            };
            match started {
                Ok((member, attachment, media)) => {
                    self.relay(member, attachment, media).await;
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

    /// Checks a join, places the room and opens the participant's session.
    async fn join(&mut self, name: &str) -> Result<(Member, Attachment), Refusal> {
        let name = DisplayName::new(name)?;
        let gateway = self.gateway.clone();
        let store = &gateway.store;
        let tenant = store
            .tenant(&self.key.tenant)
            .await?
            .ok_or_else(|| Refusal::new("room-not-found", "no such space"))?;
        let room = match store.room(&self.key).await? {
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
        debug!(room = %self.key, "join admitted");
        let member = Member {
            participant_id: random::hex(8),
            name,
            max_participants: room.participant_limit(&tenant),
            video_last_n: room.video_last_n(),
        };
        let attachment = self.attach(&member, room).await?;
        Ok((member, attachment))
    }

    /// Picks up a session whose socket dropped, through this replica; when its node is gone,
    /// the participant gets a new session on another node.
    async fn resume(&mut self, ticket: &str) -> Result<(Member, Attachment), Refusal> {
        let gateway = self.gateway.clone();
        let ticket = gateway
            .grant_key
            .open_ticket(ticket, unix_ms(SystemTime::now()))
            .map_err(|_| {
                Refusal::new(
                    "resume-refused",
                    "the session cannot be resumed; join again",
                )
            })?;
        let room = ticket.room.clone().unwrap_or_default();
        if room.tenant != self.key.tenant.as_str() || room.name != self.key.name.as_str() {
            return Err(Refusal::new(
                "resume-refused",
                "the ticket is for another room",
            ));
        }
        let name = DisplayName::new(&ticket.display_name)?;
        let tenant = gateway
            .store
            .tenant(&self.key.tenant)
            .await?
            .ok_or_else(|| Refusal::new("room-not-found", "no such space"))?;
        if tenant.suspended {
            return Err(DomainError::TenantSuspended.into());
        }
        let stored = gateway.store.room(&self.key).await?;
        let member = Member {
            participant_id: ticket.participant_id.clone(),
            name,
            max_participants: stored
                .as_ref()
                .map_or(0, |room| room.participant_limit(&tenant)),
            video_last_n: stored
                .as_ref()
                .map_or(domain::DEFAULT_VIDEO_LAST_N, domain::Room::video_last_n),
        };
        let node = NodeId(ticket.node_id.clone());
        match gateway
            .fleet
            .resume_session(&node, self.key.clone(), &ticket.session_id)
            .await
        {
            Ok(events) => {
                info!(room = %self.key, %node, "session resumed");
                let attachment = Attachment {
                    node,
                    session_id: ticket.session_id,
                    events,
                };
                self.send_ticket(&member, &attachment).await;
                Ok((member, attachment))
            }
            Err(_) => {
                let room = stored.ok_or_else(|| Refusal::new("room-not-found", "no such room"))?;
                let attachment = self.attach(&member, room).await?;
                // The old media connection is gone with its node.
                self.send(&ServerMessage::Reconnect).await;
                Ok((member, attachment))
            }
        }
    }

    /// Places the room (keeping a live node) and opens a session for `member` there.
    async fn attach(&mut self, member: &Member, room: Room) -> Result<Attachment, Refusal> {
        let node = self.place(room).await?;
        let gateway = self.gateway.clone();
        let session_id = random::hex(16);
        let grant = v1::Grant {
            room: Some(v1::RoomRef {
                tenant: self.key.tenant.to_string(),
                name: self.key.name.to_string(),
            }),
            participant_id: member.participant_id.clone(),
            display_name: member.name.to_string(),
            can_publish: true,
            can_subscribe: true,
            max_participants: member.max_participants,
            video_last_n: member.video_last_n,
            expires_at_unix_ms: unix_ms(SystemTime::now() + GRANT_LIFETIME),
        };
        let open = v1::OpenSession {
            session_id: session_id.clone(),
            grant_signature: gateway.grant_key.sign(&grant),
            grant: Some(grant),
        };
        let events = gateway
            .fleet
            .open_session(&node, self.key.clone(), open)
            .await
            .map_err(|error| {
                warn!(%error, "could not open a session");
                Refusal::new("unavailable", "the media node is unavailable, try again")
            })?;
        let attachment = Attachment {
            node,
            session_id,
            events,
        };
        self.send_ticket(member, &attachment).await;
        Ok(attachment)
    }

    /// Tells the client how to resume this session should its socket drop.
    async fn send_ticket(&mut self, member: &Member, attachment: &Attachment) {
        let ticket = v1::ResumeTicket {
            session_id: attachment.session_id.clone(),
            node_id: attachment.node.0.clone(),
            room: Some(v1::RoomRef {
                tenant: self.key.tenant.to_string(),
                name: self.key.name.to_string(),
            }),
            participant_id: member.participant_id.clone(),
            display_name: member.name.to_string(),
            expires_at_unix_ms: unix_ms(SystemTime::now() + TICKET_LIFETIME),
        };
        let ticket = self.gateway.grant_key.seal_ticket(&ticket);
        self.send(&ServerMessage::Session { ticket }).await;
    }

    /// The node that hosts the room: its live node, or the least-loaded node its tenant may
    /// use, recorded with compare-and-set so that racing gateways agree.
    async fn place(&mut self, mut room: Room) -> Result<NodeId, Refusal> {
        let gateway = self.gateway.clone();
        let store = &gateway.store;
        let tenant = store
            .tenant(&self.key.tenant)
            .await?
            .ok_or_else(|| Refusal::new("room-not-found", "no such space"))?;
        let pools = store.pools().await?;
        for _ in 0..10 {
            if let Some(node) = room.node.clone().filter(|n| gateway.fleet.is_available(n)) {
                return Ok(node);
            }
            let mut nodes = gateway.fleet.nodes();
            // The rooms recorded on each node count too: other gateways place rooms as well.
            let placed = store.rooms().await.unwrap_or_default();
            for node in &mut nodes {
                let recorded = placed
                    .iter()
                    .filter(|r| r.node.as_ref() == Some(&node.id))
                    .count() as u32;
                node.rooms = node.rooms.max(recorded);
            }
            let chosen =
                domain::choose_node(&nodes, |node| domain::may_use(&tenant, &node.pool, &pools))
                    .ok_or_else(|| {
                        Refusal::new("platform-full", "the platform is full, try again later")
                    })?;
            match store
                .place_room(&self.key, &room.revision, Some(chosen.id.clone()))
                .await
            {
                Ok(_) => {
                    info!(room = %self.key, node = %chosen.id, "room placed");
                    return Ok(chosen.id.clone());
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

    /// Moves the participant's session to the room's (new) node: its node is gone or drains.
    async fn move_session(
        &mut self,
        member: &Member,
        old: &Attachment,
    ) -> Result<Attachment, Refusal> {
        let gateway = self.gateway.clone();
        gateway
            .fleet
            .close_session(&old.session_id, v1::CloseReason::ConnectionLost)
            .await;
        let room = gateway
            .store
            .room(&self.key)
            .await?
            .ok_or_else(|| Refusal::new("room-not-found", "the room was removed"))?;
        let attachment = self.attach(member, room).await?;
        info!(room = %self.key, from = %old.node, to = %attachment.node, "session moved");
        self.send(&ServerMessage::Reconnect).await;
        Ok(attachment)
    }

    /// Relays signalling between the joined client and its node until the participant leaves,
    /// the session ends, or the socket drops. A session whose node goes away moves to another.
    async fn relay(
        &mut self,
        member: Member,
        mut attachment: Attachment,
        media: Option<(bool, bool)>,
    ) {
        let gateway = self.gateway.clone();
        // The join's own media state goes to the node as the session's first signal.
        if let Some((audio_muted, video_muted)) = media {
            let initial = ClientMessage::Media {
                audio_muted,
                video_muted,
                screen_sharing: false,
            };
            if let Ok(signal) = to_signal(initial) {
                let _ = gateway.fleet.signal(&attachment.session_id, signal).await;
            }
        }
        let mut moves: Vec<Instant> = Vec::new();
        let ending = loop {
            let must_move = tokio::select! {
                inbound = self.receive() => match inbound {
                    Inbound::Gone => break Ending::Detach,
                    Inbound::Refused => false,
                    Inbound::Message(ClientMessage::Leave) => {
                        if let Ok(signal) = to_signal(ClientMessage::Leave) {
                            let _ = gateway.fleet.signal(&attachment.session_id, signal).await;
                        }
                        break Ending::Close(v1::CloseReason::Left);
                    }
                    Inbound::Message(message) => match to_signal(message) {
                        // A node that cannot be reached any more means a move.
                        Ok(signal) => gateway.fleet.signal(&attachment.session_id, signal).await.is_err(),
                        Err(error) => {
                            if !self.refuse(error.code(), error.to_string()).await {
                                break Ending::Detach;
                            }
                            false
                        }
                    },
                },
                event = attachment.events.recv() => match event {
                    Some(ClientEvent::Signal(signal)) => {
                        if let Some(message) = from_signal(signal)
                            && !self.send(&message).await
                        {
                            break Ending::Detach;
                        }
                        false
                    }
                    Some(ClientEvent::Closed(v1::CloseReason::ConnectionLost)) | Some(ClientEvent::Move) | None => true,
                    Some(ClientEvent::Closed(reason)) => {
                        self.send(&ServerMessage::Closed { reason: reason.into() }).await;
                        break Ending::Close(reason);
                    }
                },
            };
            if must_move {
                let now = Instant::now();
                moves.retain(|at| now.duration_since(*at) < MOVE_WINDOW);
                moves.push(now);
                if moves.len() > MAX_MOVES {
                    warn!(room = %self.key, "the session keeps failing; giving up");
                    self.send(&ServerMessage::Closed {
                        reason: CloseReason::ConnectionLost,
                    })
                    .await;
                    break Ending::Close(v1::CloseReason::ConnectionLost);
                }
                match self.move_session(&member, &attachment).await {
                    Ok(next) => attachment = next,
                    Err(refusal) => {
                        warn!(room = %self.key, code = refusal.code, "could not move a session");
                        self.refuse(refusal.code, refusal.message).await;
                        self.send(&ServerMessage::Closed {
                            reason: CloseReason::ConnectionLost,
                        })
                        .await;
                        break Ending::Close(v1::CloseReason::ConnectionLost);
                    }
                }
            }
        };
        match ending {
            Ending::Close(reason) => {
                gateway
                    .fleet
                    .close_session(&attachment.session_id, reason)
                    .await;
                let _ = self.socket.send(Message::Close(None)).await;
            }
            // The session lives on at its node; the client may resume it through any replica
            // with its ticket. If it never does, the node ends it when its media times out.
            Ending::Detach => gateway.fleet.forget_session(&attachment.session_id),
        }
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

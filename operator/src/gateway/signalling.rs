//! One participant's signalling WebSocket.
//!
//! The session runs in two phases. Until the person has joined, the socket accepts only `join`
//! messages; a refused join (bad name, full room) answers with an error and lets them try again.
//! Once joined, every message is converted to a `treffpunkt.v1` signal and relayed to the node
//! that hosts the room, and what the node says comes back the same way. Bad messages are
//! answered with an error and change nothing; the call goes on.
//!
//! The join itself (checks, placement, the session on the node, the resume ticket) is
//! [`crate::admission`]'s: this module owns only the socket, its frames, the message budget,
//! the join timeout, and the relay loop that follows a session when it moves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use tracing::{debug, warn};
use treffpunkt_proto::signalling::{
    ClientMessage, CloseReason, ServerMessage, from_signal, to_signal,
};
use treffpunkt_proto::v1;

use super::Gateway;
use crate::admission::{Admitted, Attachment, Member};
use crate::domain::{RoomKey, RoomName, TenantName};
use crate::fleet::ClientEvent;
use crate::store::Store;

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
            let admission = &self.gateway.admission;
            let started = match inbound {
                Inbound::Gone => return,
                Inbound::Refused => continue,
                Inbound::Message(ClientMessage::Join {
                    name,
                    audio_muted,
                    video_muted,
                }) => admission
                    .join(&self.key, &name)
                    .await
                    .map(|admitted| (admitted, Some((audio_muted, video_muted)))),
                Inbound::Message(ClientMessage::Resume { ticket }) => admission
                    .resume(&self.key, &ticket)
                    .await
                    .map(|admitted| (admitted, None)),
                Inbound::Message(_) => {
                    if !self.refuse("not-joined", "join the room first").await {
                        return;
                    }
                    continue;
                }
            };
            match started {
                Ok((
                    Admitted {
                        member,
                        attachment,
                        moved,
                    },
                    media,
                )) => {
                    self.announce(&attachment, moved).await;
                    self.relay(member, attachment, media).await;
                    return;
                }
                Err(refusal) => {
                    if !self.refuse(refusal.code.as_str(), refusal.message).await {
                        return;
                    }
                }
            }
        }
    }

    /// Tells the client how to resume its session, and, if the session is new on another node
    /// than its media connection knows, to make that connection again.
    async fn announce(&mut self, attachment: &Attachment, moved: bool) {
        let ticket = attachment.ticket.clone();
        self.send(&ServerMessage::Session { ticket }).await;
        if moved {
            self.send(&ServerMessage::Reconnect).await;
        }
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
                match self.move_on(&member, &attachment, &mut moves).await {
                    Some(next) => attachment = next,
                    None => break Ending::Close(v1::CloseReason::ConnectionLost),
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

    /// Moves the session to the room's node now, after its node went away or drains; `None`
    /// when it cannot move, or has moved too often lately, and the client has been told that
    /// the session ended.
    async fn move_on(
        &mut self,
        member: &Member,
        attachment: &Attachment,
        moves: &mut Vec<Instant>,
    ) -> Option<Attachment> {
        let now = Instant::now();
        moves.retain(|at| now.duration_since(*at) < MOVE_WINDOW);
        moves.push(now);
        if moves.len() > MAX_MOVES {
            warn!(room = %self.key, "the session keeps failing; giving up");
        } else {
            let gateway = self.gateway.clone();
            match gateway
                .admission
                .move_session(&self.key, member, attachment)
                .await
            {
                Ok(next) => {
                    self.announce(&next, true).await;
                    return Some(next);
                }
                Err(refusal) => {
                    warn!(room = %self.key, code = %refusal.code, "could not move a session");
                    self.refuse(refusal.code.as_str(), refusal.message).await;
                }
            }
        }
        self.send(&ServerMessage::Closed {
            reason: CloseReason::ConnectionLost,
        })
        .await;
        None
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

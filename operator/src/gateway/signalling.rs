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
//! the limits on sockets and joins per client address, the join timeout, and the relay loop
//! that follows a session when it moves.
//!
//! A socket beyond the caps on WebSockets (per client address, or in total) is upgraded, told
//! why in an `error` message (`too-many-connections`, `server-busy`) and closed at once. A
//! socket that has not joined within the join timeout is told `join-timeout` and closed. A
//! `join` beyond the joins per address per minute is refused with `too-many-joins`, and the
//! client may try again later on the same socket.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use tracing::{Instrument as _, debug, warn};
use treffpunkt_proto::features::Features;
use treffpunkt_proto::signalling::{
    ClientMessage, CloseReason, ServerMessage, for_client, from_signal, to_signal,
};
use treffpunkt_proto::v1;

use super::Gateway;
use super::address::{AddressKey, client_address};
use super::limits::{Crowded, Ticket, codes};
use crate::admission::{Admitted, Attachment, Member, Refusal, RefusalCode};
use crate::domain::{Credentials, RoomKey, RoomName, TenantName};
use crate::fleet::ClientEvent;
use crate::store::Store;

/// The largest message the gateway reads; larger ones close the socket (code 1009). Twice
/// the largest it accepts, so that a client that sends a little too much learns why; and all a
/// socket can make the gateway hold for a message, since the reader reserves a frame's
/// announced length before the frame arrives.
const MAX_FRAME_BYTES: usize = 128 * 1024;
/// The largest message the gateway accepts; larger ones are answered with an error.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How much a socket reads at once, and so the buffer an idle socket holds. The reader's
/// default (128 KiB) made two thousand unjoined sockets cost a quarter of a gigabyte; joined
/// participants' messages are a few hundred bytes, SDP a few kilobytes.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// How long the gateway waits for a refused client to take its answer before it closes.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages a client may send in a burst, and per second after that.
const MESSAGE_BURST: f64 = 100.0;
const MESSAGES_PER_SECOND: f64 = 20.0;

/// `GET /api/v1/rooms/{tenant}/{room}/signal`: upgrades to the signalling WebSocket.
pub async fn upgrade<S: Store>(
    State(gateway): State<Arc<Gateway<S>>>,
    Path((tenant, room)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let key = match (TenantName::new(tenant), RoomName::new(room)) {
        (Ok(tenant), Ok(name)) => RoomKey { tenant, name },
        (Err(error), _) | (_, Err(error)) => {
            return (axum::http::StatusCode::NOT_FOUND, error.to_string()).into_response();
        }
    };
    let limits = &gateway.limits;
    let from = client_address(
        peer.ip(),
        &headers,
        &limits.trusted_proxies,
        limits.client_address_header,
    );
    let client = AddressKey::from(from);
    let place = gateway.websockets.enter(Some(client));
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            match place {
                Ok(place) => {
                    let _open = gateway.metrics.connection();
                    // Everything logged for this connection names its room, never who is in it.
                    let span =
                        tracing::info_span!("signalling", tenant = %key.tenant, room = %key.name);
                    Session::new(gateway, key, socket, from, place)
                        .run()
                        .instrument(span)
                        .await
                }
                Err(crowded) => turn_away(socket, &client, crowded).await,
            }
        })
}

/// Tells a client beyond a cap on WebSockets why, and closes its socket.
async fn turn_away(mut socket: WebSocket, client: &AddressKey, crowded: Crowded) {
    let (code, message, close) = match crowded {
        Crowded::Address => (
            codes::TOO_MANY_CONNECTIONS,
            "too many connections from your address",
            close_code::POLICY,
        ),
        Crowded::Total => (
            codes::SERVER_BUSY,
            "the server has as many connections as it takes; try again later",
            close_code::AGAIN,
        ),
    };
    debug!(%client, code, "WebSocket refused");
    farewell(&mut socket, code, message, close).await;
}

/// Sends an error with `code` and closes the socket with `close`, giving up on a client that
/// does not take it.
async fn farewell(socket: &mut WebSocket, code: &'static str, message: &str, close: u16) {
    let error = ServerMessage::error(code, message);
    let Ok(text) = serde_json::to_string(&error) else {
        return;
    };
    let frame = CloseFrame {
        code: close,
        reason: Utf8Bytes::from_static(code),
    };
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, async {
        socket.send(Message::Text(text.into())).await?;
        socket.send(Message::Close(Some(frame))).await
    })
    .await;
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
    /// Whom the limits per address count this socket for.
    client: AddressKey,
    /// The address the client came from: placement prefers nodes near it. Kept for the
    /// session only, never logged or stored.
    from: IpAddr,
    /// The socket's place among the open WebSockets, given back when the session ends.
    _place: Ticket,
    /// What the client named in its join or resume: it is told in the forms it understands.
    features: Features,
}

/// How the relay ended.
enum Ending {
    /// The participant left or the session ended: tell the node.
    Close(v1::CloseReason),
    /// The socket dropped: the session lives on and may be resumed.
    Detach,
    /// Another connection resumed the session (the same client on a new socket, or someone
    /// replaying its ticket): the session is that connection's now.
    TakenOver,
}

/// Moves of one session within [`MOVE_WINDOW`] after which the gateway gives up.
const MAX_MOVES: usize = 5;
const MOVE_WINDOW: Duration = Duration::from_secs(60);

impl<S: Store> Session<S> {
    fn new(
        gateway: Arc<Gateway<S>>,
        key: RoomKey,
        socket: WebSocket,
        from: IpAddr,
        place: Ticket,
    ) -> Self {
        Self {
            gateway,
            key,
            socket,
            budget: MessageBudget::new(),
            client: AddressKey::from(from),
            from,
            _place: place,
            features: Features::default(),
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

    /// Sends `message` in the forms the client understands (one or several messages).
    async fn send_all(&mut self, message: ServerMessage) -> bool {
        for message in for_client(message, self.features) {
            if !self.send(&message).await {
                return false;
            }
        }
        true
    }

    /// Answers a member's request for an invitation to the room; `false` when the socket is
    /// gone.
    async fn invitation(&mut self, member: &Member) -> bool {
        let answer = match self.gateway.admission.invitation(&self.key, member).await {
            Ok(invitation) => {
                let (invite, expires_at_unix_ms) = invitation.unzip();
                ServerMessage::Invitation {
                    invite,
                    expires_at_unix_ms,
                }
            }
            Err(refusal) => ServerMessage::error(refusal.code.as_str(), refusal.message),
        };
        self.send(&answer).await
    }

    async fn refuse(&mut self, code: &str, message: impl Into<String>) -> bool {
        self.gateway.metrics.refusal(code);
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
            // A browser closes with "going away" when its page goes (the tab closed, the
            // browser quit): nothing is left that could resume, so it counts as leaving, and the
            // others see the participant go now rather than when the node's wait runs out. A
            // line that breaks sends no close frame, and is still waited for.
            Message::Close(Some(frame)) if frame.code == close_code::AWAY => {
                return Inbound::Message(ClientMessage::Leave);
            }
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
        let join_timeout = self.gateway.limits.join_timeout;
        let deadline = tokio::time::sleep(join_timeout);
        tokio::pin!(deadline);
        loop {
            let inbound = tokio::select! {
                inbound = self.receive() => inbound,
                () = &mut deadline => {
                    let message = format!("join within {} seconds", join_timeout.as_secs());
                    debug!(client = %self.client, "closing a socket that did not join");
                    farewell(&mut self.socket, codes::JOIN_TIMEOUT, &message, close_code::POLICY).await;
                    return;
                }
            };
            let admission = &self.gateway.admission;
            let started = match inbound {
                Inbound::Gone => return,
                Inbound::Refused => continue,
                // A resume counts as a join: when its node is gone it opens a new session.
                Inbound::Message(ClientMessage::Join { .. } | ClientMessage::Resume { .. })
                    if !self.gateway.joins.allow(self.client, Instant::now()) =>
                {
                    let refused = self
                        .refuse(
                            codes::TOO_MANY_JOINS,
                            "too many joins from your address; wait a minute",
                        )
                        .await;
                    if !refused {
                        return;
                    }
                    continue;
                }
                Inbound::Message(ClientMessage::Join {
                    name,
                    audio_muted,
                    video_muted,
                    password,
                    invite,
                    features,
                }) => {
                    self.features = Features::from_names(&features);
                    let credentials = Credentials {
                        password,
                        invite,
                        from: Some(self.from),
                    };
                    let Some(joined) = self.join(&name, &credentials).await else {
                        continue;
                    };
                    joined.map(|admitted| (admitted, Some((audio_muted, video_muted))))
                }
                Inbound::Message(ClientMessage::Resume { ticket, features }) => {
                    self.features = Features::from_names(&features);
                    admission
                        .resume(&self.key, &ticket, Some(self.from))
                        .await
                        .map(|admitted| (admitted, None))
                }
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
                    self.announce(&attachment, &member, moved).await;
                    let span = tracing::info_span!(
                        "session",
                        session = %attachment.session_id,
                        node = %attachment.node,
                    );
                    self.relay(member, attachment, media).instrument(span).await;
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

    /// Asks admission to let `name` in with `credentials`. A password is tried only while the
    /// client's address has wrong ones left for this room, and a wrong one counts; `None` when
    /// the refusal was sent here already (`Some(Err)` when it is the caller's to send).
    async fn join(
        &mut self,
        name: &str,
        credentials: &Credentials,
    ) -> Option<Result<Admitted, Refusal>> {
        let gateway = self.gateway.clone();
        let attempt = (self.client, self.key.clone());
        let now = Instant::now();
        if credentials.password.is_some() && !gateway.wrong_passwords.has_left(&attempt, now) {
            let message = "too many wrong passwords for this room; wait ten minutes";
            gateway.metrics.join(false);
            self.refuse(codes::TOO_MANY_ATTEMPTS, message).await;
            return None;
        }
        let joined = gateway.admission.join(&self.key, name, credentials).await;
        gateway.metrics.join(joined.is_ok());
        if joined
            .as_ref()
            .is_err_and(|refusal| refusal.code == RefusalCode::PasswordWrong)
        {
            gateway.wrong_passwords.allow(attempt, now);
        }
        Some(joined)
    }

    /// Tells the client how to resume its session, and, if the session is new on another node
    /// than its media connection knows, to make that connection again.
    async fn announce(&mut self, attachment: &Attachment, member: &Member, moved: bool) {
        let ticket = attachment.ticket.clone();
        let session = self
            .gateway
            .session_message(ticket, member.room_title.clone());
        self.send(&session).await;
        if moved {
            self.send(&ServerMessage::Reconnect).await;
        }
    }

    /// Sends the client a fresh ticket for its session (and the room's title with it); whether
    /// the socket took it.
    async fn send_ticket(&mut self, member: &Member, attachment: &Attachment) -> bool {
        let gateway = self.gateway.clone();
        let ticket = gateway
            .admission
            .fresh_ticket(&self.key, member, attachment);
        let session = gateway.session_message(ticket, member.room_title.clone());
        self.send(&session).await
    }

    /// Relays signalling between the joined client and its node until the participant leaves,
    /// the session ends, or the socket drops. A session whose node goes away moves to another.
    async fn relay(
        &mut self,
        mut member: Member,
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
        let mut refresh = tokio::time::interval(gateway.limits.ticket_refresh);
        refresh.tick().await;
        let ending = loop {
            let must_move = tokio::select! {
                _ = refresh.tick() => {
                    if !self.send_ticket(&member, &attachment).await {
                        break Ending::Detach;
                    }
                    false
                }
                inbound = self.receive() => match inbound {
                    Inbound::Gone => break Ending::Detach,
                    Inbound::Refused => false,
                    Inbound::Message(ClientMessage::Leave) => {
                        if let Ok(signal) = to_signal(ClientMessage::Leave) {
                            let _ = gateway.fleet.signal(&attachment.session_id, signal).await;
                        }
                        break Ending::Close(v1::CloseReason::Left);
                    }
                    Inbound::Message(ClientMessage::Invitation) => {
                        if !self.invitation(&member).await {
                            break Ending::Detach;
                        }
                        false
                    }
                    Inbound::Message(message) => match to_signal(message) {
                        Ok(signal) => {
                            if matches!(signal.kind, Some(v1::signal::Kind::Offer(_))) {
                                debug!("the client's offer, to the node");
                            }
                            // A node that cannot be reached any more means a move.
                            gateway.fleet.signal(&attachment.session_id, signal).await.is_err()
                        }
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
                        let Some(message) = from_signal(signal) else { continue };
                        if matches!(message, ServerMessage::Welcome { .. }) {
                            debug!("the node's welcome, to the client");
                        }
                        // A new role goes into the ticket at once, so that it survives a move.
                        let new_role = learn_role(&mut member, &message);
                        if !self.send_all(message).await {
                            break Ending::Detach;
                        }
                        if new_role && !self.send_ticket(&member, &attachment).await {
                            break Ending::Detach;
                        }
                        false
                    }
                    Some(ClientEvent::Closed(v1::CloseReason::ConnectionLost)) | Some(ClientEvent::Move) | None => true,
                    Some(ClientEvent::Replaced) => break Ending::TakenOver,
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
        // Whether the session's route is still this connection's: once another connection
        // resumed the session, what this one does must not touch it.
        let ours = !attachment.events.is_closed();
        match ending {
            Ending::Close(reason) => {
                if ours {
                    gateway
                        .fleet
                        .close_session(&attachment.session_id, reason)
                        .await;
                }
                let _ = self.socket.send(Message::Close(None)).await;
            }
            // The session lives on at its node; the client may resume it through any replica
            // with its ticket. If it never does, the node ends it when its media times out.
            Ending::Detach if ours => gateway.fleet.forget_session(&attachment.session_id),
            Ending::Detach => {}
            Ending::TakenOver => {
                let reason = v1::CloseReason::Replaced.into();
                self.send(&ServerMessage::Closed { reason }).await;
                let _ = self.socket.send(Message::Close(None)).await;
            }
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
                .move_session(&self.key, member, attachment, Some(self.from))
                .await
            {
                Ok(next) => {
                    gateway.metrics.moved(true);
                    self.announce(&next, member, true).await;
                    return Some(next);
                }
                Err(refusal) => {
                    gateway.metrics.moved(false);
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

/// Takes what `message` from the node says about `member` into it: being let in from the lobby
/// (the welcome), and a role that changed. Returns whether anything changed, so that the
/// ticket says it at once and a session that moves or resumes elsewhere keeps it.
fn learn_role(member: &mut Member, message: &ServerMessage) -> bool {
    let before = (member.moderator, member.lobby);
    match message {
        ServerMessage::Welcome {
            participant_id,
            moderator,
            ..
        } if *participant_id == member.participant_id => {
            member.lobby = false;
            member.moderator = *moderator;
        }
        ServerMessage::Role {
            participant_id,
            moderator,
        } if *participant_id == member.participant_id => member.moderator = *moderator,
        _ => return false,
    }
    before != (member.moderator, member.lobby)
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

    #[test]
    fn a_new_role_and_an_admission_from_the_lobby_are_kept_for_the_ticket() {
        let mut member = Member {
            participant_id: "p1".into(),
            name: crate::domain::DisplayName::new("Anna").unwrap(),
            max_participants: 10,
            video_last_n: 16,
            moderator: false,
            lobby: true,
            first_moderates: false,
            room_title: None,
        };
        let welcome = |id: &str, moderator| ServerMessage::Welcome {
            participant_id: id.into(),
            participants: Vec::new(),
            resumed: false,
            moderator,
            locked: false,
            hands: Vec::new(),
        };
        let role = |id: &str, moderator| ServerMessage::Role {
            participant_id: id.into(),
            moderator,
        };
        assert!(
            !learn_role(&mut member, &welcome("p2", true)),
            "someone else's"
        );
        assert!(member.lobby);
        assert!(learn_role(&mut member, &welcome("p1", false)), "let in");
        assert!(!member.lobby && !member.moderator);
        assert!(!learn_role(&mut member, &role("p2", true)));
        assert!(learn_role(&mut member, &role("p1", true)), "made moderator");
        assert!(member.moderator);
        assert!(!learn_role(&mut member, &role("p1", true)), "nothing new");
        assert!(!learn_role(&mut member, &ServerMessage::Reconnect));
    }
}

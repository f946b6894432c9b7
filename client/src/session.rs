//! The signalling task of a synthetic participant: it owns the WebSocket and the current media
//! connection, answers the node, follows its session when it moves to another node, and resumes
//! it through the gateway when the socket drops.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;
use treffpunkt_proto::features::Features;
use treffpunkt_proto::signalling::{ClientMessage, ServerMessage};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::notices::NoticeBoard;
use crate::peer::{ConnectionSetup, MediaConnection, StateChange};
use crate::relay::redirect_candidates;
use crate::sender::Sending;
use crate::{Error, JoinOptions, Joining, Publish, Received, Result, RoomEvent};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Where media sockets bind unless told otherwise.
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How long a dropped socket is retried before the participant gives up.
const RESUME_PATIENCE: Duration = Duration::from_secs(30);

/// What the participant's owner asks of the task.
#[derive(Debug)]
pub(crate) enum Control {
    /// Send this message.
    Send(ClientMessage),
    /// Send this text as it is, as a misbehaving client would.
    Raw(String),
    /// Leave the room; answered when done.
    Leave(oneshot::Sender<()>),
}

/// What the task reports once the participant is in and connected.
#[derive(Debug)]
pub(crate) struct Joined {
    pub id: String,
    pub others: Vec<(String, String)>,
    pub moderator: bool,
}

/// Counters the owner may read.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Media connections made (more than one after moves).
    pub connections: std::sync::atomic::AtomicU32,
    /// Socket resumptions.
    pub resumes: std::sync::atomic::AtomicU32,
}

/// The next message from the gateway. Messages this client cannot read (a newer gateway's)
/// are skipped, as a browser skips types it does not know.
async fn next_message(socket: &mut Socket) -> Result<ServerMessage> {
    loop {
        let frame = socket
            .next()
            .await
            .ok_or_else(|| Error::Signalling("the gateway closed the socket".into()))?
            .map_err(|e| Error::Signalling(e.to_string()))?;
        if let Message::Text(text) = frame {
            match serde_json::from_str(&text) {
                Ok(message) => return Ok(message),
                Err(error) => debug!(%error, "skipping a message this client does not know"),
            }
        }
    }
}

/// Opens the signalling socket without Nagle's algorithm, as browsers open theirs: an answer
/// sent while the gateway had not yet acknowledged the message before would otherwise wait
/// for its delayed ACK (40 ms).
async fn connect(
    url: &str,
) -> std::result::Result<
    (
        Socket,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    tokio_tungstenite::connect_async_with_config(url, None, true).await
}

async fn send_text(socket: &mut Socket, text: String) -> Result<()> {
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|e| Error::Signalling(e.to_string()))
}

async fn send(socket: &mut Socket, message: &ClientMessage) -> Result<()> {
    let text = serde_json::to_string(message).map_err(|e| Error::Signalling(e.to_string()))?;
    send_text(socket, text).await
}

/// Reads what the gateway still sends until it closes the socket (it does after a leave), for
/// at most two seconds. A socket dropped with unread messages is reset rather than closed, and
/// a gateway whose read the reset beats cannot tell the leave from a lost connection: the
/// session would stay at its node, counted in the room, until its media timed out.
async fn closed_by_the_gateway(socket: &mut Socket) {
    let closed = async {
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), closed).await;
}

pub(crate) struct Task {
    pub url: String,
    pub name: String,
    pub joining: Joining,
    /// What it sends, shared with its owner (who reads what was sent and sets the audio
    /// level) and changed by the node (which layers).
    pub sending: Arc<Sending>,
    /// What the node told it, shared with its owner.
    pub notices: NoticeBoard,
    pub received: Received,
    pub events: mpsc::UnboundedSender<RoomEvent>,
    pub control: mpsc::UnboundedReceiver<Control>,
    pub joined: Option<oneshot::Sender<Result<Joined>>>,
    pub counters: Arc<Counters>,
}

struct State {
    socket: Socket,
    ticket: Option<String>,
    id: Option<String>,
    media: Option<MediaConnection>,
    generation: u32,
    states: mpsc::UnboundedSender<StateChange>,
    sending: Arc<Sending>,
    leaving: bool,
    moderator: bool,
}

impl Task {
    fn redirect(&self, sdp: String) -> String {
        match self.joining.media_via {
            Some(to) => redirect_candidates(&sdp, to),
            None => sdp,
        }
    }

    fn fail(&mut self, error: Error) {
        if let Some(joined) = self.joined.take() {
            let _ = joined.send(Err(error));
        }
    }

    pub async fn run(mut self) {
        let mut socket = match connect(&self.url).await {
            Ok((socket, _)) => socket,
            Err(error) => return self.fail(Error::Signalling(error.to_string())),
        };
        let join = ClientMessage::Join {
            name: self.name.clone(),
            audio_muted: false,
            video_muted: false,
            password: self.joining.password.clone(),
            invite: self.joining.invite.clone(),
            features: Features::ALL.names(),
        };
        if let Err(error) = send(&mut socket, &join).await {
            return self.fail(error);
        }
        let (states, mut state_changes) = mpsc::unbounded_channel();
        let mut state = State {
            socket,
            ticket: None,
            id: None,
            media: None,
            generation: 0,
            states,
            sending: self.sending.clone(),
            leaving: false,
            moderator: false,
        };
        let mut others = Vec::new();
        loop {
            tokio::select! {
                message = next_message(&mut state.socket) => match message {
                    Ok(message) => {
                        let closed = matches!(message, ServerMessage::Closed { .. });
                        if let Err(error) = self.handle(&mut state, message, &mut others).await {
                            debug!(%error, "signalling failed");
                            if self.joined.is_some() {
                                return self.fail(error);
                            }
                        }
                        if closed {
                            break;
                        }
                    }
                    Err(error) => {
                        if state.leaving || !self.resume(&mut state).await {
                            if self.joined.is_some() {
                                return self.fail(error);
                            }
                            let _ = self.events.send(RoomEvent::Closed { reason: "socket-closed".into() });
                            break;
                        }
                    }
                },
                control = self.control.recv() => match control {
                    Some(Control::Send(message)) => {
                        let _ = send(&mut state.socket, &message).await;
                    }
                    Some(Control::Raw(text)) => {
                        let _ = send_text(&mut state.socket, text).await;
                    }
                    Some(Control::Leave(done)) => {
                        state.leaving = true;
                        let _ = send(&mut state.socket, &ClientMessage::Leave).await;
                        closed_by_the_gateway(&mut state.socket).await;
                        if let Some(media) = state.media.take() {
                            media.close().await;
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => break,
                },
                Some((generation, change)) = state_changes.recv() => {
                    if generation != state.generation || change != RTCPeerConnectionState::Connected {
                        continue;
                    }
                    let outgoing = self.joining.outgoing.clone();
                    if let (Some(media), Some(outgoing), Some(id)) = (state.media.as_mut(), outgoing, state.id.clone())
                        && let Err(error) = media.start_sending(&id, &outgoing, &state.sending).await
                    {
                        debug!(%error, "could not start sending");
                    }
                    if let (Some(joined), Some(id)) = (self.joined.take(), state.id.clone()) {
                        let _ = joined.send(Ok(Joined { id, others: std::mem::take(&mut others), moderator: state.moderator }));
                    }
                }
            }
        }
        if let Some(media) = state.media.take() {
            media.close().await;
        }
    }

    async fn handle(
        &mut self,
        state: &mut State,
        message: ServerMessage,
        others: &mut Vec<(String, String)>,
    ) -> Result<()> {
        match message {
            ServerMessage::Session { ticket, .. } => state.ticket = Some(ticket),
            ServerMessage::Welcome {
                participant_id,
                participants,
                resumed,
                moderator,
                ..
            } => {
                if self.joined.is_some() {
                    *others = participants.into_iter().map(|p| (p.id, p.name)).collect();
                }
                state.moderator = moderator;
                state.id = Some(participant_id.clone());
                if !resumed {
                    self.connect_media(state, &participant_id).await?;
                }
            }
            ServerMessage::Answer { sdp } => {
                if let Some(media) = &state.media {
                    media.apply_answer(self.redirect(sdp)).await?;
                }
            }
            ServerMessage::Offer { sdp } => {
                if let Some(media) = &state.media {
                    let sdp = media.answer(self.redirect(sdp)).await?;
                    send(&mut state.socket, &ClientMessage::Answer { sdp }).await?;
                }
            }
            ServerMessage::Reconnect => {
                if let Some(old) = state.media.take() {
                    old.close().await;
                }
            }
            ServerMessage::ParticipantJoined { participant } => {
                let _ = self.events.send(RoomEvent::Joined {
                    id: participant.id,
                    name: participant.name,
                });
            }
            ServerMessage::ParticipantsJoined { participants } => {
                for participant in participants {
                    let _ = self.events.send(RoomEvent::Joined {
                        id: participant.id,
                        name: participant.name,
                    });
                }
            }
            ServerMessage::ParticipantLeft {
                participant_id,
                reason,
            } => {
                let _ = self.events.send(RoomEvent::Left {
                    id: participant_id,
                    reason: reason.as_str().to_owned(),
                });
            }
            notice @ (ServerMessage::PublishLayers { .. }
            | ServerMessage::DominantSpeaker { .. }
            | ServerMessage::VideoState { .. }
            | ServerMessage::Chat { .. }) => {
                if let Some(active) = self.notices.record(&notice, Instant::now()) {
                    state.sending.set_active_layers(&active);
                }
            }
            ServerMessage::Error { code, message } => {
                if self.joined.is_some() {
                    return Err(Error::Refused { code, message });
                }
                let _ = self.events.send(RoomEvent::Error { code });
            }
            ServerMessage::Closed { reason } => {
                let reason = reason.as_str().to_owned();
                if self.joined.is_some() {
                    return Err(Error::Refused {
                        code: reason,
                        message: "the session was closed".into(),
                    });
                }
                let _ = self.events.send(RoomEvent::Closed { reason });
            }
            notice @ (ServerMessage::Media { .. }
            | ServerMessage::Connection { .. }
            | ServerMessage::Hands { .. }
            | ServerMessage::Role { .. }
            | ServerMessage::RoomState { .. }
            | ServerMessage::Waiting { .. }
            | ServerMessage::Knocking { .. }
            | ServerMessage::Request { .. }
            | ServerMessage::Invitation { .. }) => {
                let _ = self.events.send(RoomEvent::Notice(notice));
            }
            ServerMessage::Candidate { .. } => {}
        }
        Ok(())
    }

    /// A new session: a new media connection, offered to the node.
    async fn connect_media(&mut self, state: &mut State, participant_id: &str) -> Result<()> {
        if let Some(old) = state.media.take() {
            old.close().await;
        }
        state.generation += 1;
        self.counters
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (media, offer) = MediaConnection::offer(ConnectionSetup {
            generation: state.generation,
            participant_id,
            outgoing: self.joining.outgoing.as_ref(),
            local_ip: self.joining.local_ip.unwrap_or(LOOPBACK),
            states: state.states.clone(),
            received: self.received.clone(),
        })
        .await?;
        state.media = Some(media);
        let offer = ClientMessage::Offer {
            sdp: offer.sdp,
            sources: offer
                .sources
                .into_iter()
                .map(|(mid, source)| (mid, source.to_owned()))
                .collect(),
        };
        send(&mut state.socket, &offer).await
    }

    /// Reconnects the socket and resumes the session with its ticket; `false` when that fails
    /// for good.
    async fn resume(&mut self, state: &mut State) -> bool {
        let Some(ticket) = state.ticket.clone() else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + RESUME_PATIENCE;
        let mut backoff = Duration::from_millis(100);
        while tokio::time::Instant::now() < deadline {
            if let Ok((mut socket, _)) = connect(&self.url).await
                && send(
                    &mut socket,
                    &ClientMessage::Resume {
                        ticket: ticket.clone(),
                        features: Features::ALL.names(),
                    },
                )
                .await
                .is_ok()
            {
                state.socket = socket;
                self.counters
                    .resumes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return true;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        false
    }
}

/// The options of a participant that publishes as `publish` says.
pub(crate) fn publishing(publish: Option<Publish>) -> JoinOptions {
    JoinOptions {
        publish,
        ..JoinOptions::default()
    }
}

//! The signalling task of a synthetic participant: it owns the WebSocket and the current media
//! connection, answers the node, follows its session when it moves to another node, and resumes
//! it through the gateway when the socket drops.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;
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
    /// Send this as it is.
    Raw(Value),
    /// Leave the room; answered when done.
    Leave(oneshot::Sender<()>),
}

/// What the task reports once the participant is in and connected.
#[derive(Debug)]
pub(crate) struct Joined {
    pub id: String,
    pub others: Vec<(String, String)>,
}

/// Counters the owner may read.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Media connections made (more than one after moves).
    pub connections: std::sync::atomic::AtomicU32,
    /// Socket resumptions.
    pub resumes: std::sync::atomic::AtomicU32,
}

async fn next_json(socket: &mut Socket) -> Result<Value> {
    loop {
        let message = socket
            .next()
            .await
            .ok_or_else(|| Error::Signalling("the gateway closed the socket".into()))?
            .map_err(|e| Error::Signalling(e.to_string()))?;
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).map_err(|e| Error::Signalling(e.to_string()));
        }
    }
}

async fn send_json(socket: &mut Socket, value: Value) -> Result<()> {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .map_err(|e| Error::Signalling(e.to_string()))
}

pub(crate) fn refused(message: &Value) -> Error {
    Error::Refused {
        code: message["code"].as_str().unwrap_or_default().to_owned(),
        message: message["message"].as_str().unwrap_or_default().to_owned(),
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
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
        let mut socket = match tokio_tungstenite::connect_async(&self.url).await {
            Ok((socket, _)) => socket,
            Err(error) => return self.fail(Error::Signalling(error.to_string())),
        };
        if let Err(error) = send_json(&mut socket, json!({"type": "join", "name": self.name})).await
        {
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
        };
        let mut others = Vec::new();
        loop {
            tokio::select! {
                message = next_json(&mut state.socket) => match message {
                    Ok(message) => {
                        if let Err(error) = self.handle(&mut state, &message, &mut others).await {
                            debug!(%error, "signalling failed");
                            if self.joined.is_some() {
                                return self.fail(error);
                            }
                        }
                        if matches!(message["type"].as_str(), Some("closed")) {
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
                    Some(Control::Raw(value)) => {
                        let _ = send_json(&mut state.socket, value).await;
                    }
                    Some(Control::Leave(done)) => {
                        state.leaving = true;
                        let _ = send_json(&mut state.socket, json!({"type": "leave"})).await;
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
                        let _ = joined.send(Ok(Joined { id, others: std::mem::take(&mut others) }));
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
        message: &Value,
        others: &mut Vec<(String, String)>,
    ) -> Result<()> {
        match message["type"].as_str().unwrap_or_default() {
            "session" => state.ticket = Some(text(&message["ticket"])),
            "welcome" => {
                let id = text(&message["participantId"]);
                if self.joined.is_some() {
                    *others = message["participants"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| (text(&p["id"]), text(&p["name"])))
                        .collect();
                }
                state.id = Some(id.clone());
                if message["resumed"].as_bool() != Some(true) {
                    // A new session: a new media connection.
                    if let Some(old) = state.media.take() {
                        old.close().await;
                    }
                    state.generation += 1;
                    self.counters
                        .connections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (media, offer) = MediaConnection::offer(ConnectionSetup {
                        generation: state.generation,
                        participant_id: &id,
                        outgoing: self.joining.outgoing.as_ref(),
                        local_ip: self.joining.local_ip.unwrap_or(LOOPBACK),
                        states: state.states.clone(),
                        received: self.received.clone(),
                    })
                    .await?;
                    state.media = Some(media);
                    send_json(
                        &mut state.socket,
                        json!({"type": "offer", "sdp": offer.sdp, "sources": offer.sources}),
                    )
                    .await?;
                }
            }
            "answer" => {
                if let Some(media) = &state.media {
                    media
                        .apply_answer(self.redirect(text(&message["sdp"])))
                        .await?;
                }
            }
            "offer" => {
                if let Some(media) = &state.media {
                    let answer = media.answer(self.redirect(text(&message["sdp"]))).await?;
                    send_json(&mut state.socket, json!({"type": "answer", "sdp": answer})).await?;
                }
            }
            "reconnect" => {
                if let Some(old) = state.media.take() {
                    old.close().await;
                }
            }
            "participant-joined" => {
                let participant = &message["participant"];
                let _ = self.events.send(RoomEvent::Joined {
                    id: text(&participant["id"]),
                    name: text(&participant["name"]),
                });
            }
            "participant-left" => {
                let _ = self.events.send(RoomEvent::Left {
                    id: text(&message["participantId"]),
                    reason: text(&message["reason"]),
                });
            }
            "publish-layers" | "dominant-speaker" | "video-state" | "chat" => {
                if let Some(active) = self.notices.record(message, Instant::now()) {
                    state.sending.set_active_layers(&active);
                }
            }
            "error" => {
                if self.joined.is_some() {
                    return Err(refused(message));
                }
                let _ = self.events.send(RoomEvent::Error {
                    code: text(&message["code"]),
                });
            }
            "closed" => {
                let reason = text(&message["reason"]);
                if self.joined.is_some() {
                    return Err(Error::Refused {
                        code: reason,
                        message: "the session was closed".into(),
                    });
                }
                let _ = self.events.send(RoomEvent::Closed { reason });
            }
            _ => {}
        }
        Ok(())
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
            if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&self.url).await
                && send_json(&mut socket, json!({"type": "resume", "ticket": ticket}))
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
        media_via: None,
    }
}

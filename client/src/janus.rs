//! The same synthetic participant, speaking the HTTP API of Janus's VideoRoom plugin instead of
//! Treffpunkt's signalling: the benchmark drives the SFU that users would otherwise pick with
//! the very client, media and counting it drives the media node with.
//!
//! Each participant has a Janus session of its own, with one plugin handle, and reads the
//! session's events by long polling (which also keeps the session alive):
//! - the publisher joins with `joinandconfigure`, offering as it offers the media node; Janus
//!   answers on the long poll, and the publisher counts as in once Janus says `webrtcup` (a
//!   subscriber that comes earlier is refused);
//! - a subscriber joins the publisher's feed, Janus offers, the subscriber answers with
//!   `start` and every candidate in the answer.
//!
//! Janus names every stream it forwards `janus`, so a publisher's packets carry [`SOURCE`] as
//! their source, and a room has one publisher. [`create_room`] makes a room that neither
//! records nor caps the bitrate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::debug;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::peer::{ConnectionSetup, MediaConnection, StateChange};
use crate::session::{Control, Joined};
use crate::{Error, Joining, Result, RoomEvent, Wiring};

/// The source of what a Janus publisher sends: the stream id Janus gives its subscribers.
pub const SOURCE: &str = "janus";

/// The publisher's id in its room.
const PUBLISHER_ID: u64 = 1;
/// How long one request, or the wait for one event, may take.
const PATIENCE: Duration = Duration::from_secs(10);
/// How often a subscription that came before the publisher was up is tried.
const SUBSCRIBE_TRIES: u32 = 20;
/// Janus's error code for a feed that does not publish yet.
const NOT_PUBLISHING: i64 = 428;

/// Sends one request to Janus's HTTP API at `server` (`body` as JSON for a POST, nothing for
/// a GET) and returns the JSON it answers.
async fn request(server: SocketAddr, path: &str, body: Option<&Value>) -> Result<Value> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        Error::Signalling(format!("Janus {path}: {what}: {error}"))
    };
    let stream = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| failed("connecting", &e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed("handshake", &e))?;
    tokio::spawn(connection);
    let builder = hyper::Request::builder()
        .uri(path)
        .header(hyper::header::HOST, server.to_string());
    let request = match body {
        Some(body) => builder
            .method(hyper::Method::POST)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string()))),
        None => builder
            .method(hyper::Method::GET)
            .body(Full::new(Bytes::new())),
    }
    .map_err(|e| failed("request", &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed("sending", &e))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| failed("reading", &e))?
        .to_bytes();
    if !status.is_success() {
        return Err(failed("status", &status));
    }
    serde_json::from_slice(&bytes).map_err(|e| failed("not JSON", &e))
}

/// A random transaction id (Janus matches answers to requests by it).
fn transaction() -> String {
    format!("{:016x}", treffpunkt_proto::random::u64())
}

/// The error in a Janus reply, whether Janus's own or the plugin's.
fn error_of(reply: &Value) -> Option<(i64, String)> {
    if reply["janus"] == "error" {
        let error = &reply["error"];
        return Some((
            error["code"].as_i64().unwrap_or(0),
            error["reason"].as_str().unwrap_or("").to_owned(),
        ));
    }
    let data = &reply["plugindata"]["data"];
    data.get("error_code").map(|code| {
        (
            code.as_i64().unwrap_or(0),
            data["error"].as_str().unwrap_or("").to_owned(),
        )
    })
}

/// A Janus session with one VideoRoom handle.
#[derive(Clone, Copy, Debug)]
struct Handle {
    server: SocketAddr,
    session: u64,
    handle: u64,
}

impl Handle {
    /// Creates a session and attaches a VideoRoom handle to it.
    async fn open(server: SocketAddr) -> Result<Self> {
        let id = |reply: &Value, what: &str| {
            reply["data"]["id"].as_u64().ok_or_else(|| {
                Error::Signalling(format!("Janus gave no {what} id: {}", short(reply)))
            })
        };
        let created = request(
            server,
            "/janus",
            Some(&json!({"janus": "create", "transaction": transaction()})),
        )
        .await?;
        let session = id(&created, "session")?;
        let attached = request(
            server,
            &format!("/janus/{session}"),
            Some(&json!({
                "janus": "attach",
                "plugin": "janus.plugin.videoroom",
                "transaction": transaction(),
            })),
        )
        .await?;
        Ok(Self {
            server,
            session,
            handle: id(&attached, "handle")?,
        })
    }

    /// Sends `body` to the plugin, with `jsep` if given; returns Janus's reply (the plugin's
    /// answer to a synchronous request, an `ack` otherwise), or its error.
    async fn message(&self, body: Value, jsep: Option<Value>) -> Result<Value> {
        let mut message = json!({"janus": "message", "transaction": transaction(), "body": body});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let reply = request(
            self.server,
            &format!("/janus/{}/{}", self.session, self.handle),
            Some(&message),
        )
        .await?;
        match error_of(&reply) {
            Some((code, reason)) => Err(refused(code, reason)),
            None => Ok(reply),
        }
    }

    /// Ends the session, and with it the handle and its peer connection.
    async fn destroy(&self) {
        let _ = request(
            self.server,
            &format!("/janus/{}", self.session),
            Some(&json!({"janus": "destroy", "transaction": transaction()})),
        )
        .await;
    }

    /// Long-polls the session's events into `events` until the receiver is dropped or the
    /// session is gone.
    async fn poll(self, events: mpsc::UnboundedSender<Value>) {
        let path = format!("/janus/{}?maxev=10", self.session);
        let mut failures = 0;
        while !events.is_closed() {
            match request(self.server, &path, None).await {
                Ok(Value::Array(batch)) => {
                    failures = 0;
                    for event in batch {
                        let _ = events.send(event);
                    }
                }
                Ok(event) => {
                    failures = 0;
                    let _ = events.send(event);
                }
                Err(error) => {
                    failures += 1;
                    debug!(%error, "Janus long poll failed");
                    if failures > 3 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

fn refused(code: i64, reason: String) -> Error {
    Error::Refused {
        code: code.to_string(),
        message: reason,
    }
}

/// The start of a reply, for an error message.
fn short(reply: &Value) -> String {
    reply.to_string().chars().take(200).collect()
}

/// Creates VideoRoom room `room` on the Janus server at `server`: one publisher, VP8 and Opus,
/// no bitrate cap (so Janus sends no REMB), no periodic keyframe requests and no recording.
pub async fn create_room(server: SocketAddr, room: u64) -> Result<()> {
    let handle = Handle::open(server).await?;
    let created = handle
        .message(
            json!({
                "request": "create",
                "room": room,
                "publishers": 1,
                "bitrate": 0,
                "fir_freq": 0,
                "videocodec": "vp8",
                "audiocodec": "opus",
                "record": false,
            }),
            None,
        )
        .await;
    handle.destroy().await;
    created.map(|_| ())
}

/// The signalling task of a participant in a Janus room.
pub(crate) struct Task {
    server: SocketAddr,
    room: u64,
    name: String,
    joining: Joining,
    wiring: Wiring,
}

/// A participant that is in: its handle, its events and its media connection.
struct In {
    handle: Handle,
    events: mpsc::UnboundedReceiver<Value>,
    media: MediaConnection,
}

impl Task {
    pub(crate) fn new(
        server: SocketAddr,
        room: u64,
        name: String,
        joining: Joining,
        wiring: Wiring,
    ) -> Self {
        Self {
            server,
            room,
            name,
            joining,
            wiring,
        }
    }

    /// What its media connection needs.
    fn setup<'a>(
        &'a self,
        participant_id: &'a str,
        states: &mpsc::UnboundedSender<StateChange>,
    ) -> ConnectionSetup<'a> {
        ConnectionSetup {
            generation: 1,
            participant_id,
            outgoing: self.joining.outgoing.as_ref(),
            local_ip: self
                .joining
                .local_ip
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            states: states.clone(),
            received: self.wiring.received.clone(),
        }
    }

    fn publishes(&self) -> bool {
        self.joining
            .outgoing
            .as_ref()
            .is_some_and(|o| o.audio.is_some() || o.video.is_some())
    }

    pub(crate) async fn run(mut self) {
        let joined = self.join().await;
        let (id, mut inside) = match joined {
            Ok(joined) => joined,
            Err(error) => {
                let _ = self.wiring.joined.send(Err(error));
                return;
            }
        };
        self.wiring
            .counters
            .connections
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.wiring.joined.send(Ok(Joined {
            id,
            others: Vec::new(),
            moderator: false,
        }));
        loop {
            tokio::select! {
                control = self.wiring.control.recv() => match control {
                    Some(Control::Leave(done)) => {
                        inside.handle.destroy().await;
                        inside.media.close().await;
                        let _ = done.send(());
                        return;
                    }
                    // Treffpunkt's own messages mean nothing to Janus.
                    Some(Control::Send(_) | Control::Raw(_)) => {}
                    None => break,
                },
                event = inside.events.recv() => match event {
                    Some(event) if event["janus"] == "hangup" => {
                        let reason = event["reason"].as_str().unwrap_or("hangup").to_owned();
                        let _ = self.wiring.events.send(RoomEvent::Closed { reason });
                    }
                    Some(_) => {}
                    None => {
                        let _ = self.wiring.events.send(RoomEvent::Closed { reason: "socket-closed".into() });
                        break;
                    }
                },
            }
        }
        inside.handle.destroy().await;
        inside.media.close().await;
    }

    /// Joins the room as the publisher or as a subscriber; returns the participant's id. A
    /// join that fails ends its Janus session.
    async fn join(&mut self) -> Result<(String, In)> {
        let handle = Handle::open(self.server).await?;
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(handle.poll(events_tx));
        let joined = self.join_with(handle, events).await;
        if joined.is_err() {
            handle.destroy().await;
        }
        joined
    }

    async fn join_with(
        &mut self,
        handle: Handle,
        mut events: mpsc::UnboundedReceiver<Value>,
    ) -> Result<(String, In)> {
        let (states_tx, mut states) = mpsc::unbounded_channel();
        let (id, media) = if self.publishes() {
            let (mut media, offer) = MediaConnection::offer(self.setup(SOURCE, &states_tx)).await?;
            handle
                .message(
                    json!({
                        "request": "joinandconfigure",
                        "ptype": "publisher",
                        "room": self.room,
                        "id": PUBLISHER_ID,
                        "display": self.name,
                    }),
                    Some(json!({"type": "offer", "sdp": offer.sdp, "trickle": false})),
                )
                .await?;
            let answer = next_jsep(&mut events).await?;
            media.apply_answer(answer).await?;
            connected(&mut states).await?;
            if let Some(outgoing) = &self.joining.outgoing {
                media
                    .start_sending(SOURCE, outgoing, &self.wiring.sending)
                    .await?;
            }
            next_event(&mut events, |event| event["janus"] == "webrtcup").await?;
            (SOURCE.to_owned(), media)
        } else {
            let mut media = MediaConnection::receiving(self.setup(&self.name, &states_tx)).await?;
            let offer = self.subscribe(&handle, &mut events).await?;
            let answer = media.answer_complete(offer).await?;
            handle
                .message(
                    json!({"request": "start"}),
                    Some(json!({"type": "answer", "sdp": answer, "trickle": false})),
                )
                .await?;
            connected(&mut states).await?;
            (self.name.clone(), media)
        };
        Ok((
            id,
            In {
                handle,
                events,
                media,
            },
        ))
    }

    /// Subscribes to the room's publisher, trying again while it is not up yet; returns
    /// Janus's offer.
    async fn subscribe(
        &self,
        handle: &Handle,
        events: &mut mpsc::UnboundedReceiver<Value>,
    ) -> Result<String> {
        let join = json!({
            "request": "join",
            "ptype": "subscriber",
            "room": self.room,
            "streams": [{"feed": PUBLISHER_ID}],
        });
        let mut tries = 0;
        loop {
            handle.message(join.clone(), None).await?;
            match next_jsep(events).await {
                Err(Error::Refused { code, .. })
                    if code == NOT_PUBLISHING.to_string() && tries < SUBSCRIBE_TRIES =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                result => return result,
            }
        }
    }
}

/// The next event that `wanted` picks, skipping others; an error event fails the wait.
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Value>,
    wanted: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let wait = async {
        while let Some(event) = events.recv().await {
            if let Some((code, reason)) = error_of(&event) {
                return Err(refused(code, reason));
            }
            if wanted(&event) {
                return Ok(event);
            }
        }
        Err(Error::Signalling("the Janus session ended".into()))
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .map_err(|_| Error::Timeout("an event from Janus"))?
}

/// The SDP of the next event that carries one.
async fn next_jsep(events: &mut mpsc::UnboundedReceiver<Value>) -> Result<String> {
    let event = next_event(events, |event| event["jsep"]["sdp"].is_string()).await?;
    Ok(event["jsep"]["sdp"].as_str().unwrap_or_default().to_owned())
}

/// Waits until the media connection is connected.
async fn connected(states: &mut mpsc::UnboundedReceiver<StateChange>) -> Result<()> {
    let wait = async {
        while let Some((_, state)) = states.recv().await {
            match state {
                RTCPeerConnectionState::Connected => return Ok(()),
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    return Err(Error::Signalling(format!(
                        "the media connection to Janus {state}"
                    )));
                }
                _ => {}
            }
        }
        Err(Error::Signalling("the media connection ended".into()))
    };
    tokio::time::timeout(PATIENCE, wait)
        .await
        .map_err(|_| Error::Timeout("the media connection to Janus"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_from_janus_and_from_the_plugin() {
        let janus = json!({"janus": "error", "error": {"code": 458, "reason": "No such session"}});
        assert_eq!(error_of(&janus), Some((458, "No such session".into())));
        let plugin = json!({
            "janus": "event",
            "plugindata": {"plugin": "janus.plugin.videoroom",
                "data": {"videoroom": "event", "error_code": 428, "error": "No such feed"}},
        });
        assert_eq!(error_of(&plugin), Some((428, "No such feed".into())));
        let fine = json!({"janus": "event", "plugindata": {"data": {"videoroom": "joined"}}});
        assert_eq!(error_of(&fine), None);
    }
}

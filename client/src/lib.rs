//! A Rust client of Treffpunkt's signalling protocol, on the `webrtc` crate: synthetic
//! participants that join a room through the gateway's WebSocket exactly as browsers do.
//!
//! A [`Participant`] joins under a name, publishes an audio and a video track of synthetic
//! packets ([`media`]), answers the node's renegotiation offers, and counts and verifies what it
//! receives from everyone else. Tests use it to check that media really flows through the node;
//! the load generator uses it to create load.
#![forbid(unsafe_code)]

pub mod media;
pub mod relay;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

pub use media::Kind;

/// What can go wrong for a synthetic participant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway refused the join; `code` is the protocol's error code.
    #[error("join refused: {code}: {message}")]
    Refused {
        /// The stable error code.
        code: String,
        /// The detail.
        message: String,
    },
    /// The WebSocket failed.
    #[error("signalling: {0}")]
    Signalling(String),
    /// The WebRTC stack failed.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the room tells a participant after joining.
#[derive(Clone, Debug, PartialEq)]
pub enum RoomEvent {
    /// Someone joined.
    Joined {
        /// Their id.
        id: String,
        /// Their name.
        name: String,
    },
    /// Someone left.
    Left {
        /// Their id.
        id: String,
        /// `left` or `connection-lost`.
        reason: String,
    },
    /// An error signal.
    Error {
        /// The stable code.
        code: String,
    },
    /// The session ended.
    Closed {
        /// Why.
        reason: String,
    },
}

/// How a synthetic participant publishes.
#[derive(Clone, Debug)]
pub struct Publish {
    /// Video packets per second (one packet per frame).
    pub video_fps: u32,
    /// Video payload size in bytes.
    pub video_packet_size: usize,
    /// Every how many frames a keyframe is sent.
    pub keyframe_interval: u32,
    /// Audio payload size in bytes (Opus at 50 packets per second).
    pub audio_packet_size: usize,
}

impl Default for Publish {
    fn default() -> Self {
        Self {
            video_fps: 30,
            video_packet_size: 1000,
            keyframe_interval: 15,
            audio_packet_size: 120,
        }
    }
}

/// What one participant received from one remote track.
#[derive(Clone, Debug, Default)]
pub struct TrackStats {
    /// Intact packets received.
    pub packets: u64,
    /// Packets whose payload was not what the sender sent (or not addressed to this stream).
    pub corrupt: u64,
    /// When the first intact packet arrived.
    pub first_at: Option<Instant>,
    /// When the last intact packet arrived.
    pub last_at: Option<Instant>,
    /// The lowest index seen.
    pub lowest_index: Option<u32>,
    /// The highest index seen.
    pub highest_index: Option<u32>,
    /// Distinct indices seen: retransmissions of a packet count once.
    pub distinct: u64,
}

impl TrackStats {
    /// The share of packets between the lowest and highest index that arrived.
    pub fn coverage(&self) -> f64 {
        match (self.lowest_index, self.highest_index) {
            (Some(low), Some(high)) => self.distinct as f64 / f64::from(high - low + 1),
            _ => 0.0,
        }
    }
}

/// What arrived on one remote track.
#[derive(Debug, Default)]
pub struct TrackLog {
    stats: TrackStats,
    seen: HashSet<u32>,
}

/// Received media, by the sender's participant id and kind.
pub type Received = Arc<Mutex<HashMap<(String, Kind), TrackLog>>>;

/// How a synthetic participant joins.
#[derive(Clone, Debug, Default)]
pub struct JoinOptions {
    /// What it publishes; `None` for a listener.
    pub publish: Option<Publish>,
    /// Send media to this address (a relay in front of the node) instead of the node's
    /// candidate.
    pub media_via: Option<SocketAddr>,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

struct Handler {
    state: mpsc::UnboundedSender<RTCPeerConnectionState>,
    gathered: mpsc::UnboundedSender<()>,
    received: Received,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(());
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(async move {
            let source = track.stream_id().await;
            let kind = match track.kind().await {
                RtpCodecKind::Audio => Kind::Audio,
                _ => Kind::Video,
            };
            while let Some(event) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(packet) = event else {
                    continue;
                };
                let intact =
                    media::verify(kind, &packet.payload).filter(|stamp| stamp.source == source);
                let now = Instant::now();
                let mut received = received.lock().unwrap_or_else(|p| p.into_inner());
                let log = received.entry((source.clone(), kind)).or_default();
                let stats = &mut log.stats;
                match intact {
                    Some(stamp) => {
                        stats.packets += 1;
                        stats.first_at.get_or_insert(now);
                        stats.last_at = Some(now);
                        stats.lowest_index = Some(
                            stats
                                .lowest_index
                                .map_or(stamp.index, |l| l.min(stamp.index)),
                        );
                        stats.highest_index = Some(
                            stats
                                .highest_index
                                .map_or(stamp.index, |h| h.max(stamp.index)),
                        );
                        if log.seen.insert(stamp.index) {
                            stats.distinct += 1;
                        }
                    }
                    None => stats.corrupt += 1,
                }
            }
        });
    }
}

fn codec(kind: Kind) -> RTCRtpCodec {
    match kind {
        Kind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        Kind::Video => RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
    }
}

/// A synthetic participant in a room.
pub struct Participant {
    /// The id the node gave this participant.
    pub id: String,
    /// Who was in the room when it joined: (id, name).
    pub others_at_join: Vec<(String, String)>,
    /// What it received.
    pub received: Received,
    /// When the join was sent.
    pub join_sent_at: Instant,
    pc: Arc<dyn PeerConnection>,
    to_gateway: mpsc::UnboundedSender<Value>,
    events: mpsc::UnboundedReceiver<RoomEvent>,
    tasks: Vec<JoinHandle<()>>,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

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

fn refused(message: &Value) -> Error {
    Error::Refused {
        code: message["code"].as_str().unwrap_or_default().to_owned(),
        message: message["message"].as_str().unwrap_or_default().to_owned(),
    }
}

impl Participant {
    /// Joins the room whose signalling WebSocket is at `url` under `name`, publishing as
    /// `publish` says, and returns once media is connected.
    pub async fn join(url: &str, name: &str, publish: Option<Publish>) -> Result<Self> {
        Self::join_with(
            url,
            name,
            JoinOptions {
                publish,
                media_via: None,
            },
        )
        .await
    }

    /// Joins as [`Self::join`] does, with more options.
    pub async fn join_with(url: &str, name: &str, options: JoinOptions) -> Result<Self> {
        let JoinOptions { publish, media_via } = options;
        let redirect = move |sdp: String| match media_via {
            Some(to) => relay::redirect_candidates(&sdp, to),
            None => sdp,
        };
        let join_sent_at = Instant::now();
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| Error::Signalling(e.to_string()))?;
        let join = json!({"type": "join", "name": name});
        socket
            .send(Message::Text(join.to_string().into()))
            .await
            .map_err(|e| Error::Signalling(e.to_string()))?;
        let welcome = tokio::time::timeout(Duration::from_secs(10), next_json(&mut socket))
            .await
            .map_err(|_| Error::Timeout("the welcome"))??;
        if welcome["type"] == "error" {
            return Err(refused(&welcome));
        }
        let id = welcome["participantId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let others_at_join = welcome["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["id"].as_str().unwrap_or_default().to_owned(),
                    p["name"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();

        let received: Received = Arc::default();
        let (state_tx, mut states) = mpsc::unbounded_channel();
        let (gathered_tx, mut gathered) = mpsc::unbounded_channel();
        let mut engine = MediaEngine::default();
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec(Kind::Audio),
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )?;
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: codec(Kind::Video),
                payload_type: 96,
            },
            RtpCodecKind::Video,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut engine)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(
            PeerConnectionBuilder::new()
                .with_configuration(RTCConfigurationBuilder::new().build())
                .with_media_engine(engine)
                .with_interceptor_registry(registry)
                .with_setting_engine(
                    SettingEngineBuilder::new()
                        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                        .build(),
                )
                .with_handler(Arc::new(Handler {
                    state: state_tx,
                    gathered: gathered_tx,
                    received: received.clone(),
                }))
                .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
                .build()
                .await?,
        );

        let mut tracks = Vec::new();
        if publish.is_some() {
            for (kind, rtp_kind) in [
                (Kind::Audio, RtpCodecKind::Audio),
                (Kind::Video, RtpCodecKind::Video),
            ] {
                let ssrc = rand_ssrc();
                let track_id = format!("{id}-{kind:?}").to_lowercase();
                let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                    id.clone(),
                    track_id.clone(),
                    track_id,
                    rtp_kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: codec(kind),
                        ..Default::default()
                    }],
                )));
                let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
                tracks.push((kind, ssrc, track, sender));
            }
        } else {
            // A listener still needs a media section to carry the connection's ICE and DTLS.
            pc.add_transceiver_from_kind(
                RtpCodecKind::Audio,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        }

        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), gathered.recv()).await;
        let offer_sdp = pc
            .local_description()
            .await
            .ok_or(Error::Timeout("the local description"))?
            .sdp;
        socket
            .send(Message::Text(
                json!({"type": "offer", "sdp": offer_sdp})
                    .to_string()
                    .into(),
            ))
            .await
            .map_err(|e| Error::Signalling(e.to_string()))?;

        // From here on, a task owns the socket: it answers the node's offers and hands room
        // events to the participant.
        let (to_gateway, mut outgoing) = mpsc::unbounded_channel::<Value>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (answer_tx, mut answer) = mpsc::unbounded_channel::<Result<String>>();
        let signalling_pc = pc.clone();
        let signalling = tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = next_json(&mut socket) => {
                        let Ok(message) = message else {
                            let _ = events_tx.send(RoomEvent::Closed { reason: "socket-closed".into() });
                            return;
                        };
                        match message["type"].as_str().unwrap_or_default() {
                            "answer" => {
                                let _ = answer_tx.send(Ok(message["sdp"].as_str().unwrap_or_default().to_owned()));
                            }
                            "offer" => {
                                let sdp = redirect(message["sdp"].as_str().unwrap_or_default().to_owned());
                                match answer_offer(&signalling_pc, sdp).await {
                                    Ok(answer) => {
                                        let reply = json!({"type": "answer", "sdp": answer});
                                        if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                                            return;
                                        }
                                    }
                                    Err(error) => debug!(%error, "could not answer the node's offer"),
                                }
                            }
                            "participant-joined" => {
                                let p = &message["participant"];
                                let _ = events_tx.send(RoomEvent::Joined {
                                    id: p["id"].as_str().unwrap_or_default().to_owned(),
                                    name: p["name"].as_str().unwrap_or_default().to_owned(),
                                });
                            }
                            "participant-left" => {
                                let _ = events_tx.send(RoomEvent::Left {
                                    id: message["participantId"].as_str().unwrap_or_default().to_owned(),
                                    reason: message["reason"].as_str().unwrap_or_default().to_owned(),
                                });
                            }
                            "error" => {
                                let _ = answer_tx.send(Err(refused(&message)));
                                let _ = events_tx.send(RoomEvent::Error {
                                    code: message["code"].as_str().unwrap_or_default().to_owned(),
                                });
                            }
                            "closed" => {
                                let _ = events_tx.send(RoomEvent::Closed {
                                    reason: message["reason"].as_str().unwrap_or_default().to_owned(),
                                });
                            }
                            _ => {}
                        }
                    }
                    message = outgoing.recv() => {
                        let Some(message) = message else { return };
                        if socket.send(Message::Text(message.to_string().into())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });

        let answer_sdp = tokio::time::timeout(Duration::from_secs(10), answer.recv())
            .await
            .map_err(|_| Error::Timeout("the node's answer"))?
            .ok_or(Error::Timeout("the node's answer"))??;
        pc.set_remote_description(RTCSessionDescription::answer(redirect(answer_sdp))?)
            .await?;
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(state) = states.recv().await {
                match state {
                    RTCPeerConnectionState::Connected => return Ok(()),
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        return Err(Error::Timeout("a connection that failed"));
                    }
                    _ => {}
                }
            }
            Err(Error::Timeout("the connection"))
        })
        .await
        .map_err(|_| Error::Timeout("the connection"))??;

        let mut tasks = vec![signalling];
        if let Some(publish) = publish {
            for (kind, ssrc, track, sender) in tracks {
                let payload_type = negotiated_payload_type(&sender, kind).await?;
                tasks.push(tokio::spawn(send_media(
                    id.clone(),
                    kind,
                    ssrc,
                    payload_type,
                    track,
                    publish.clone(),
                )));
            }
        }
        Ok(Self {
            id,
            others_at_join,
            received,
            join_sent_at,
            pc,
            to_gateway,
            events,
            tasks,
        })
    }

    /// The next thing the room says, waiting at most `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<RoomEvent> {
        tokio::time::timeout(timeout, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// What was received from `source`'s track of `kind` so far.
    pub fn stats(&self, source: &str, kind: Kind) -> TrackStats {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(source.to_owned(), kind))
            .map(|log| log.stats.clone())
            .unwrap_or_default()
    }

    /// Sends a raw signalling message, as a misbehaving client would.
    pub fn send_raw(&self, message: Value) {
        let _ = self.to_gateway.send(message);
    }

    /// Leaves the room and closes the connection.
    pub async fn leave(self) {
        let _ = self.to_gateway.send(json!({"type": "leave"}));
        tokio::time::sleep(Duration::from_millis(50)).await;
        for task in &self.tasks {
            task.abort();
        }
        let _ = self.pc.close().await;
    }
}

async fn answer_offer(pc: &Arc<dyn PeerConnection>, sdp: String) -> Result<String> {
    pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
        .await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer.clone()).await?;
    Ok(pc
        .local_description()
        .await
        .map_or(answer.sdp, |description| description.sdp))
}

async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>, kind: Kind) -> Result<u8> {
    let mime = codec(kind).mime_type;
    let parameters = sender.get_parameters().await?;
    parameters
        .rtp_parameters
        .codecs
        .iter()
        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&mime))
        .map(|c| c.payload_type)
        .ok_or(Error::Timeout("a negotiated codec"))
}

fn rand_ssrc() -> u32 {
    // Unique enough for a test client: the clock's nanoseconds mixed with a counter.
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(1);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ COUNTER.fetch_add(0x9e37_79b9, Ordering::Relaxed)) | 1
}

async fn send_media(
    source: String,
    kind: Kind,
    ssrc: u32,
    payload_type: u8,
    track: Arc<TrackLocalStaticRTP>,
    publish: Publish,
) {
    let (interval, clock_step, size) = match kind {
        Kind::Audio => (Duration::from_millis(20), 960u32, publish.audio_packet_size),
        Kind::Video => (
            Duration::from_secs(1) / publish.video_fps.max(1),
            90_000 / publish.video_fps.max(1),
            publish.video_packet_size,
        ),
    };
    let mut tick = tokio::time::interval(interval);
    let mut index = 0u32;
    loop {
        tick.tick().await;
        let stamp = media::Stamp {
            source: source.clone(),
            kind,
            index,
            sent_at_us: unix_us(),
            keyframe: kind == Kind::Video && index.is_multiple_of(publish.keyframe_interval.max(1)),
        };
        let packet = rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker: kind == Kind::Video,
                payload_type,
                sequence_number: index as u16,
                timestamp: index.wrapping_mul(clock_step),
                ssrc,
                ..Default::default()
            },
            payload: media::payload(&stamp, size),
        };
        if track.write_rtp(packet).await.is_err() {
            return;
        }
        index = index.wrapping_add(1);
    }
}

/// The signalling URL of a room on a gateway at `http_addr`.
pub fn signal_url(http_addr: std::net::SocketAddr, tenant: &str, room: &str) -> String {
    format!("ws://{http_addr}/api/v1/rooms/{tenant}/{room}/signal")
}

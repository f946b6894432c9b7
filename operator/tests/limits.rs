//! The gateway's limits under abuse, against standalone mode in this process with real sockets
//! on loopback: each limit, configured small, is answered with its code, and a refused join
//! leaves no room behind.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures::SinkExt;
use serde_json::{Value, json};
use support::sockets::{Signalling, next_reply};
use support::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use treffpunkt_client::signal_url;
use treffpunkt_operator::domain::{RoomKey, RoomName, Tenant, TenantName};
use treffpunkt_operator::gateway::{Limits, TrustedProxies};
use treffpunkt_operator::standalone::{self, Standalone, StandaloneConfig};
use treffpunkt_operator::store::Store;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn config(limits: Limits) -> StandaloneConfig {
    StandaloneConfig {
        http: SocketAddr::new(LOOPBACK, 0),
        grpc: SocketAddr::new(LOOPBACK, 0),
        udp: SocketAddr::new(LOOPBACK, 0),
        announce_ip: LOOPBACK,
        limits,
        ..StandaloneConfig::default()
    }
}

async fn start(limits: Limits) -> Standalone {
    standalone::start(config(limits))
        .await
        .expect("standalone mode starts")
}

async fn connect(server: &Standalone, room: &str) -> Signalling {
    let url = signal_url(server.http, "public", room);
    tokio_tungstenite::connect_async(&url)
        .await
        .expect("the WebSocket opens")
        .0
}

/// Opens a WebSocket through a proxy that says it forwards for `client`.
async fn connect_for(server: &Standalone, client: &str) -> Signalling {
    let mut request = signal_url(server.http, "public", "chor")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", client.parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("the WebSocket opens")
        .0
}

/// The code of the error that comes next, or "" when something else (or nothing) comes.
async fn error_code(socket: &mut Signalling) -> String {
    match next_reply(socket).await {
        Some(reply) if reply["type"] == "error" => reply["code"].as_str().unwrap_or("").into(),
        _ => String::new(),
    }
}

/// Whether the gateway closes `socket` within five seconds.
async fn closed(socket: &mut Signalling) -> bool {
    next_reply(socket).await.is_none()
}

/// Sends a join as `name` and returns the code of the error it is answered with.
async fn join_refused(socket: &mut Signalling, name: &str) -> String {
    let join = json!({"type": "join", "name": name}).to_string();
    socket.send(Message::Text(join.into())).await.unwrap();
    error_code(socket).await
}

/// Whether the gateway still serves `socket` (it answers a blank join with `name-empty`).
async fn served(socket: &mut Signalling) -> bool {
    join_refused(socket, "").await == "name-empty"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_beyond_the_cap_per_address_are_refused_with_too_many_connections() {
    let server = start(Limits {
        max_websockets_per_address: 3,
        ..Limits::default()
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&server, "chor").await);
    }
    for socket in &mut open {
        assert!(served(socket).await, "the first three are served");
    }

    let mut fourth = connect(&server, "chor").await;
    assert_eq!(error_code(&mut fourth).await, "too-many-connections");
    assert!(closed(&mut fourth).await, "and closed");

    // A place given back is taken again.
    open.pop().unwrap().close(None).await.unwrap();
    let mut again = None;
    for _ in 0..50 {
        let mut socket = connect(&server, "chor").await;
        if served(&mut socket).await {
            again = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a closed socket's place is free again");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_beyond_the_total_cap_are_refused_with_server_busy() {
    let server = start(Limits {
        max_websockets: 2,
        ..Limits::default()
    })
    .await;
    let mut first = connect(&server, "chor").await;
    let mut second = connect(&server, "skat").await;
    assert!(served(&mut first).await && served(&mut second).await);

    let mut third = connect(&server, "chor").await;
    assert_eq!(error_code(&mut third).await, "server-busy");
    assert!(closed(&mut third).await, "and closed");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_beyond_the_rate_per_address_are_refused_with_too_many_joins() {
    let server = start(Limits {
        joins_per_minute: 3,
        ..Limits::default()
    })
    .await;
    let mut socket = connect(&server, "chor").await;
    for _ in 0..3 {
        assert_eq!(join_refused(&mut socket, "").await, "name-empty");
    }
    assert_eq!(join_refused(&mut socket, "Anna").await, "too-many-joins");
    // Another socket from the same address is no way around it; the socket stays open.
    let mut other = connect(&server, "skat").await;
    assert_eq!(join_refused(&mut other, "Anna").await, "too-many-joins");
    assert_eq!(join_refused(&mut socket, "Anna").await, "too-many-joins");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_does_not_join_in_time_is_closed_with_join_timeout() {
    let server = start(Limits {
        join_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let opened = Instant::now();
    let mut socket = connect(&server, "chor").await;

    assert_eq!(error_code(&mut socket).await, "join-timeout");
    assert!(closed(&mut socket).await, "and closed");
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
    server.stop();
}

/// How long after `start` the server closed `stream`, reading what it sends, or `None` if it
/// still had not after `limit`.
async fn closed_after(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        let read = tokio::time::timeout_at((start + limit).into(), stream.read(&mut buffer))
            .await
            .ok()?;
        if !matches!(read, Ok(n) if n > 0) {
            return Some(start.elapsed());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_its_headers_a_byte_a_second_is_closed_within_the_header_timeout() {
    let server = start(Limits {
        header_timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await;
    let stream = TcpStream::connect(server.http).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let head =
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let after = closed_after(&mut reader, Duration::from_secs(10)).await;
    trickle.abort();
    let after = after.expect("the slow client is closed");
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(4),
        "closed after {after:?}, the header timeout being 2 s"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_a_stalled_one_too() {
    let server = start(Limits {
        header_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    // Served once, then waiting for a next request that never comes.
    let stream = TcpStream::connect(server.http).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let after = closed_after(&mut reader, Duration::from_secs(10)).await;
    assert!(
        after.is_some_and(|after| after < Duration::from_secs(3)),
        "{after:?}"
    );

    // Half a request head and then nothing: the idle timeout, before the header timeout.
    let stream = TcpStream::connect(server.http).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let after = closed_after(&mut reader, Duration::from_secs(10)).await;
    assert!(
        after.is_some_and(|after| after < Duration::from_millis(1900)),
        "closed by the idle timeout: {after:?}"
    );
    drop(writer);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_websocket_outlives_the_http_timeouts() {
    let server = start(Limits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let mut socket = connect(&server, "chor").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        served(&mut socket).await,
        "the upgraded connection is the signalling session's to time out"
    );
    server.stop();
}

/// Opens a TCP connection and returns what the server sends before it closes, if it closes
/// within two seconds without being asked anything.
async fn turned_away(server: &Standalone) -> Option<String> {
    let mut stream = TcpStream::connect(server.http).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_beyond_the_caps_are_turned_away_at_once() {
    let server = start(Limits {
        max_connections_per_address: 3,
        header_timeout: Duration::from_secs(30),
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.http).await.unwrap());
    }
    let answer = turned_away(&server)
        .await
        .expect("the fourth is closed at once");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.ends_with("too-many-connections\n"), "{answer}");
    drop(held);
    server.stop();

    let server = start(Limits {
        max_connections: 2,
        header_timeout: Duration::from_secs(30),
        ..Limits::default()
    })
    .await;
    let _held = [
        TcpStream::connect(server.http).await.unwrap(),
        TcpStream::connect(server.http).await.unwrap(),
    ];
    let answer = turned_away(&server)
        .await
        .expect("the third is closed at once");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with("server-busy\n"), "{answer}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let server = start(Limits {
        max_websockets_per_address: 1,
        trusted_proxies: TrustedProxies(vec!["127.0.0.0/8".parse().unwrap()]),
        ..Limits::default()
    })
    .await;
    let mut anna = connect_for(&server, "198.51.100.1").await;
    let mut ben = connect_for(&server, "198.51.100.2").await;
    assert!(served(&mut anna).await && served(&mut ben).await);
    let mut anna_again = connect_for(&server, "198.51.100.1").await;
    assert_eq!(error_code(&mut anna_again).await, "too-many-connections");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_header_from_an_untrusted_peer_changes_nothing() {
    let server = start(Limits {
        max_websockets_per_address: 1,
        ..Limits::default()
    })
    .await;
    let mut anna = connect_for(&server, "198.51.100.1").await;
    assert!(served(&mut anna).await);
    let mut forged = connect_for(&server, "198.51.100.2").await;
    assert_eq!(error_code(&mut forged).await, "too-many-connections");
    server.stop();
}

fn room_key(tenant: &str, room: &str) -> RoomKey {
    RoomKey {
        tenant: TenantName::new(tenant).unwrap(),
        name: RoomName::new(room).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_leaves_no_room_behind() {
    let mut suspended = Tenant::public();
    suspended.name = TenantName::new("verein").unwrap();
    suspended.suspended = true;
    let mut small = Tenant::public();
    small.limits.max_rooms = 1;
    let server = standalone::start(StandaloneConfig {
        tenants: vec![suspended, small],
        rooms: vec![treffpunkt_operator::domain::Room::adhoc(room_key(
            "public", "chor",
        ))],
        ..config(Limits::default())
    })
    .await
    .expect("standalone mode starts");
    let url = signal_url(server.http, "verein", "neu");
    let mut socket = tokio_tungstenite::connect_async(&url).await.unwrap().0;
    assert_eq!(join_refused(&mut socket, "Anna").await, "tenant-suspended");
    let mut socket = connect(&server, "neu").await;
    assert_eq!(join_refused(&mut socket, "Anna").await, "room-limit");
    assert_eq!(join_refused(&mut socket, "\u{200B}").await, "name-invalid");
    assert_eq!(
        join_refused(&mut socket, "A\u{202E}nna").await,
        "name-invalid"
    );

    let rooms = server.store.rooms().await.unwrap();
    assert_eq!(rooms.len(), 1, "only the seeded room: {rooms:?}");
    assert!(
        server
            .store
            .room(&room_key("verein", "neu"))
            .await
            .unwrap()
            .is_none()
    );
    server.stop();

    // No media node: the platform is full.
    let server = standalone::start(StandaloneConfig {
        media_node: false,
        ..config(Limits::default())
    })
    .await
    .expect("standalone mode starts");
    let mut socket = connect(&server, "neu").await;
    assert_eq!(join_refused(&mut socket, "Anna").await, "platform-full");
    assert!(server.store.rooms().await.unwrap().is_empty());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_room_that_its_only_participant_left_goes_after_the_configured_time() {
    let server = start(Limits {
        unjoined_room_ttl: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let mut socket = connect(&server, "kurz").await;
    let join = json!({"type": "join", "name": "Anna"}).to_string();
    socket.send(Message::Text(join.into())).await.unwrap();
    let welcome = next_reply(&mut socket).await.expect("a welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let key = room_key("public", "kurz");
    assert!(server.store.room(&key).await.unwrap().is_some());
    let leave = json!({"type": "leave"}).to_string();
    socket.send(Message::Text(leave.into())).await.unwrap();

    let store = server.store.clone();
    let mut gone = false;
    for _ in 0..50 {
        if store.room(&key).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the room went within five seconds");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_client_gets_fresh_tickets_and_the_newest_resumes_its_session() {
    use futures::StreamExt;
    let server = start(Limits {
        ticket_refresh: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut socket = connect(&server, "frisch").await;
    let join = json!({"type": "join", "name": "Anna"}).to_string();
    socket.send(Message::Text(join.into())).await.unwrap();
    let mut tickets = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tickets.len() < 3 {
        let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline.into(), socket.next()).await
        else {
            break;
        };
        if let Message::Text(text) = message {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "session" {
                tickets.push(value["ticket"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(tickets.len(), 3, "the join's ticket and two fresh ones");
    assert!(
        tickets[0] != tickets[1] && tickets[1] != tickets[2],
        "each one new"
    );

    drop(socket);
    let mut socket = connect(&server, "frisch").await;
    let resume = json!({"type": "resume", "ticket": tickets[2]}).to_string();
    socket.send(Message::Text(resume.into())).await.unwrap();
    let welcome = resume_answer(&mut socket).await.expect("an answer");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    server.stop();
}

/// Joins Anna to `room` and waits for her welcome; returns her socket and ticket.
async fn joined_with_ticket(server: &Standalone, room: &str) -> (Signalling, String) {
    use futures::StreamExt;
    let mut socket = connect(server, room).await;
    let join = json!({"type": "join", "name": "Anna"}).to_string();
    socket.send(Message::Text(join.into())).await.unwrap();
    let (mut ticket, mut welcomed) = (None, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while ticket.is_none() || !welcomed {
        let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout_at(deadline.into(), socket.next()).await
        else {
            panic!("a ticket and a welcome come with the join");
        };
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        if value["type"] == "session" {
            ticket = value["ticket"].as_str().map(str::to_owned);
        }
        welcomed |= value["type"] == "welcome";
    }
    (socket, ticket.unwrap_or_default())
}

/// The answer to a resume, past the request to connect media again: these tests connect no
/// media, and a session whose media never connected is opened afresh when it is resumed.
async fn resume_answer(socket: &mut Signalling) -> Option<Value> {
    let answer = next_reply(socket).await?;
    if answer["type"] == "reconnect" {
        return next_reply(socket).await;
    }
    Some(answer)
}

/// Presents `ticket` on three new sockets at once, as someone who copied it would; returns
/// each socket's first answer.
async fn replayed_three_times(server: &Standalone, room: &str, ticket: &str) -> Vec<Value> {
    let mut replays = Vec::new();
    for _ in 0..3 {
        let mut socket = connect(server, room).await;
        let resume = json!({"type": "resume", "ticket": ticket}).to_string();
        socket.send(Message::Text(resume.into())).await.unwrap();
        replays.push(socket);
    }
    let mut answers = Vec::new();
    for mut socket in replays {
        answers.push(resume_answer(&mut socket).await.expect("an answer"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_replayed_after_leaving_opens_nothing() {
    let server = start(Limits::default()).await;
    let (mut socket, ticket) = joined_with_ticket(&server, "vorbei").await;
    let room = room_key("public", "vorbei");
    let fleet = server.fleet.clone();
    let counted = wait_until(Duration::from_secs(5), || {
        fleet.room_participants(&room) == 1
    })
    .await;
    assert!(counted, "the node counts Anna");
    let leave = json!({"type": "leave"}).to_string();
    socket.send(Message::Text(leave.into())).await.unwrap();
    assert!(closed(&mut socket).await, "leaving closes the socket");
    let left = wait_until(Duration::from_secs(5), || {
        fleet.room_participants(&room) == 0
    })
    .await;
    assert!(left, "the node has let Anna go");

    for reply in replayed_three_times(&server, "vorbei", &ticket).await {
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], "resume-refused", "{reply}");
    }
    // The node reports who is in its rooms every second: two reports later, nobody is.
    tokio::time::sleep(2 * treffpunkt_operator::fleet::attach::LOAD_REPORT_INTERVAL).await;
    assert_eq!(fleet.room_participants(&room), 0, "nobody is in the room");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_replayed_while_its_session_lives_resumes_it_once() {
    let server = start(Limits::default()).await;
    let (socket, ticket) = joined_with_ticket(&server, "kopie").await;
    // Anna's socket drops; her session lives on at the node, for her ticket.
    drop(socket);

    let answers = replayed_three_times(&server, "kopie", &ticket).await;
    let welcomed = answers.iter().filter(|a| a["type"] == "welcome").count();
    let refused = answers
        .iter()
        .filter(|a| a["type"] == "error" && a["code"] == "resume-refused")
        .count();
    assert_eq!((welcomed, refused), (1, 2), "{answers:?}");

    // Later, the same ticket once more: used, so refused.
    let again = replayed_three_times(&server, "kopie", &ticket).await;
    assert!(
        again.iter().all(|a| a["code"] == "resume-refused"),
        "{again:?}"
    );
    tokio::time::sleep(2 * treffpunkt_operator::fleet::attach::LOAD_REPORT_INTERVAL).await;
    let room = room_key("public", "kopie");
    assert_eq!(server.fleet.room_participants(&room), 1, "Anna, once");
    server.stop();
}

//! The chart's own coturn (`turn.server`): its rendered configuration run by Debian's coturn
//! (4.6.1, the version the chart's image pins) on loopback, spoken to over TLS as a browser
//! would (TURN Allocate and CreatePermission, RFC 8656) with credentials made by the gateway
//! from the secret the chart rendered. The image itself cannot be pulled here; the
//! configuration inside it is what these tests check.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rtc::crypto::RTCCryptoProvider;
use rtc::stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use rtc::stun::error_code::ErrorCodeAttribute;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter, METHOD_ALLOCATE,
    METHOD_CREATE_PERMISSION, Message, MessageType, Method, Setter, TransactionId,
};
use rtc::stun::textattrs::TextAttribute;
use rtc::turn::proto::PROTO_UDP;
use rtc::turn::proto::peeraddr::PeerAddress;
use rtc::turn::proto::relayaddr::RelayedAddress;
use rtc::turn::proto::reqtrans::RequestedTransport;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

/// Debian's coturn run with the chart's configuration, moved to loopback: only the addresses
/// it listens and relays on, the port and the files' places differ.
pub struct Coturn {
    child: Child,
    pub address: SocketAddr,
    pub cert_pem: String,
}

impl Coturn {
    pub fn start(rendered: &str, dir: &Path) -> Self {
        let cert = treffpunkt_operator::self_signed::load_or_make(dir, &["127.0.0.1".into()])
            .expect("a certificate for 127.0.0.1");
        let port = crate::support::free_port();
        let mut config = String::new();
        for line in rendered.lines() {
            let key = line.split('=').next().unwrap_or_default();
            let line = match key {
                "tls-listening-port" => format!("tls-listening-port={port}"),
                "cert" => format!("cert={}", cert.path.display()),
                "pkey" => format!("pkey={}", cert.key_path.display()),
                "pidfile" => format!("pidfile={}", dir.join("turnserver.pid").display()),
                "userdb" => format!("userdb={}", dir.join("turndb").display()),
                _ => line.to_owned(),
            };
            config.push_str(&line);
            config.push('\n');
        }
        config.push_str("listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\n");
        let file = dir.join("turnserver.conf");
        std::fs::write(&file, config).unwrap();
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver (Debian's coturn; the test command installs it)");
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let mut coturn = Self {
            child,
            address,
            cert_pem: cert.cert_pem,
        };
        let started = Instant::now();
        while TcpStream::connect(address).is_err() {
            if let Ok(Some(status)) = coturn.child.try_wait() {
                panic!("coturn refused the chart's configuration ({status})");
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "coturn listens"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        coturn
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a TURN request was answered with.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Success,
    /// An error response's code (401 unauthorised, 403 forbidden, ...).
    Error(u16),
}

/// A TURN client over TLS, one request at a time.
pub struct TurnClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    crypto: Arc<dyn RTCCryptoProvider>,
    username: String,
    password: String,
    realm: String,
    nonce: String,
    /// The address coturn relays from, once allocated.
    pub relayed: Option<SocketAddr>,
}

impl TurnClient {
    /// Connects to `coturn` over TLS, trusting its certificate, as `username`/`password`.
    pub fn connect(coturn: &Coturn, username: &str, password: &str) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(coturn.cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::IpAddress(coturn.address.ip().into());
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(coturn.address).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Self {
            tls: rustls::StreamOwned::new(connection, tcp),
            crypto: rtc::crypto::default_provider().unwrap(),
            username: username.to_owned(),
            password: password.to_owned(),
            realm: String::new(),
            nonce: String::new(),
            relayed: None,
        }
    }

    /// Allocates a UDP relay: first unauthenticated (coturn answers 401 with its realm and a
    /// nonce), then signed with the long-term credential.
    pub fn allocate(&mut self) -> Answer {
        let first = self.request(METHOD_ALLOCATE, None);
        let code = error_code(&first);
        assert_eq!(code, Some(401), "an unsigned Allocate is asked to sign");
        self.realm = TextAttribute::get_from_as(&first, ATTR_REALM).unwrap().text;
        self.nonce = TextAttribute::get_from_as(&first, ATTR_NONCE).unwrap().text;
        let answer = self.request(METHOD_ALLOCATE, None);
        if answer.typ.class == CLASS_SUCCESS_RESPONSE {
            let mut relayed = RelayedAddress::default();
            relayed.get_from(&answer).unwrap();
            self.relayed = Some(SocketAddr::new(relayed.ip, relayed.port));
        }
        verdict(&answer)
    }

    /// Asks to exchange packets with `peer` through the relay.
    pub fn permit(&mut self, peer: IpAddr) -> Answer {
        let answer = self.request(METHOD_CREATE_PERMISSION, Some(peer));
        verdict(&answer)
    }

    fn request(&mut self, method: Method, peer: Option<IpAddr>) -> Message {
        let mut message = Message::new();
        let crypto = self.crypto.crypto();
        let mut setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        if method == METHOD_ALLOCATE {
            setters.push(Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            }));
        }
        if let Some(ip) = peer {
            setters.push(Box::new(PeerAddress { ip, port: 10000 }));
        }
        if !self.nonce.is_empty() {
            setters.push(Box::new(TextAttribute::new(
                ATTR_USERNAME,
                self.username.clone(),
            )));
            setters.push(Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())));
            setters.push(Box::new(TextAttribute::new(ATTR_NONCE, self.nonce.clone())));
            setters.push(Box::new(
                MessageIntegrity::new_long_term_integrity_with_provider(
                    self.username.clone(),
                    self.realm.clone(),
                    self.password.clone(),
                    crypto,
                )
                .unwrap(),
            ));
        }
        setters.push(Box::new(FINGERPRINT));
        message.build(&setters).unwrap();
        self.tls.write_all(&message.raw).unwrap();
        self.tls.flush().unwrap();
        // STUN over a stream: a 20-byte header whose bytes 2-3 give the length of the rest.
        let mut header = [0u8; 20];
        self.tls.read_exact(&mut header).unwrap();
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let mut raw = header.to_vec();
        raw.resize(20 + length, 0);
        self.tls.read_exact(&mut raw[20..]).unwrap();
        let mut answer = Message::new();
        answer.unmarshal_binary(&raw).unwrap();
        answer
    }
}

fn error_code(message: &Message) -> Option<u16> {
    if message.typ.class != CLASS_ERROR_RESPONSE {
        return None;
    }
    let mut code = ErrorCodeAttribute::default();
    code.get_from(message).ok()?;
    Some(code.code.0)
}

fn verdict(message: &Message) -> Answer {
    match error_code(message) {
        Some(code) => Answer::Error(code),
        None => Answer::Success,
    }
}

/// A participant's credentials for the chart's coturn, as the gateway makes them from `secret`.
pub fn credentials(url: &str, secret: &str) -> (String, String) {
    let turn = treffpunkt_operator::gateway::Turn::new(
        vec![url.to_owned()],
        secret.as_bytes(),
        treffpunkt_operator::gateway::TURN_CREDENTIAL_LIFETIME,
    )
    .unwrap();
    let server = turn.credentials(SystemTime::now());
    (server.username, server.credential)
}

/// `server` allocates a relay with a credential the gateway made from `secret`, and refuses a
/// wrong password and another secret's credential.
pub fn assert_takes_only_the_gateways_credentials(server: &Coturn, url: &str, secret: &str) {
    let (username, password) = credentials(url, secret);
    let mut stranger = TurnClient::connect(server, &username, "not-the-password");
    assert_eq!(
        stranger.allocate(),
        Answer::Error(401),
        "a wrong password is refused"
    );
    let (_, foreign) = credentials(url, "another platform's secret");
    let mut foreigner = TurnClient::connect(server, &username, &foreign);
    assert_eq!(
        foreigner.allocate(),
        Answer::Error(401),
        "another secret's credential too"
    );
    let mut participant = TurnClient::connect(server, &username, &password);
    assert_eq!(
        participant.allocate(),
        Answer::Success,
        "the gateway's credential allocates"
    );
    assert_eq!(
        participant.relayed.map(|address| address.ip()),
        Some(server.address.ip()),
        "a relay address"
    );
}

/// A participant of `server` may relay to the `media_nodes` and to nothing else: neighbours of
/// theirs, other private networks, the cloud's metadata address, the server's own loopback.
pub fn assert_relays_only_to(server: &Coturn, url: &str, secret: &str, media_nodes: &[&str]) {
    let (username, password) = credentials(url, secret);
    let mut participant = TurnClient::connect(server, &username, &password);
    assert_eq!(participant.allocate(), Answer::Success);
    for peer in media_nodes {
        let answer = participant.permit(peer.parse().unwrap());
        assert_eq!(answer, Answer::Success, "relaying to media node {peer}");
    }
    for peer in ["192.0.2.11", "10.21.0.1", "169.254.169.254", "127.0.0.1"] {
        let answer = participant.permit(peer.parse().unwrap());
        assert_eq!(
            answer,
            Answer::Error(403),
            "relaying to {peer} is forbidden"
        );
    }
}

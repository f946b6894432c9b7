//! The door of a protected room, against standalone mode in this process, seeded with the same
//! manifests (Tenant, Room, Secrets) that kubectl takes, and joined by the Rust client over real
//! sockets: a Password room asks for its password and stops a guesser; an InviteOnly room lets
//! in only people with an invitation link made by `treffpunkt invite` for that room, and in the
//! call gives a fresh one to its moderators alone; a refused join leaves no room behind.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use support::keeps_receiving;
use treffpunkt_client::signalling::{ClientMessage, ServerMessage};
use treffpunkt_client::{Error, JoinOptions, Participant, Publish, RoomEvent, signal_url};
use treffpunkt_operator::domain::{RoomKey, RoomName, TenantName};
use treffpunkt_operator::gateway::Limits;
use treffpunkt_operator::invite;
use treffpunkt_operator::seed;
use treffpunkt_operator::standalone::{self, Standalone, StandaloneConfig};
use treffpunkt_operator::store::Store;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A club's manifests: a password room, an invite-only room, and an invite-only space whose
/// new names become rooms for invited people only.
const MANIFESTS: &str = r#"
apiVersion: treffpunkt.io/v1alpha1
kind: Tenant
metadata:
  name: verein
spec:
  displayName: Sportverein
  policy:
    adhocRooms: true
    defaultAccess: InviteOnly
---
apiVersion: treffpunkt.io/v1alpha1
kind: Room
metadata:
  name: training
  namespace: tenant-verein
spec:
  access: Password
  passwordSecretRef: {name: training-passwort, key: password}
---
apiVersion: treffpunkt.io/v1alpha1
kind: Room
metadata:
  name: kasse
  namespace: tenant-verein
spec:
  access: Password
  passwordSecretRef: {name: kasse-passwort, key: password}
---
apiVersion: treffpunkt.io/v1alpha1
kind: Room
metadata:
  name: vorstand
  namespace: tenant-verein
spec:
  access: InviteOnly
---
apiVersion: v1
kind: Secret
metadata:
  name: training-passwort
  namespace: tenant-verein
stringData:
  password: Aufschlag
---
apiVersion: v1
kind: Secret
metadata:
  name: kasse-passwort
  namespace: tenant-verein
data:
  password: QmVsZWc=
---
apiVersion: v1
kind: Secret
metadata:
  name: treffpunkt-signing-key
  namespace: tenant-verein
stringData:
  key: the club's own signing key, long enough
"#;

async fn start(limits: Limits) -> Standalone {
    let seed = seed::parse(MANIFESTS).expect("the manifests are valid");
    standalone::start(StandaloneConfig {
        http: SocketAddr::new(LOOPBACK, 0),
        grpc: SocketAddr::new(LOOPBACK, 0),
        udp: SocketAddr::new(LOOPBACK, 0),
        announce_ip: LOOPBACK,
        tenants: seed.tenants,
        rooms: seed.rooms,
        secrets: seed.secrets,
        limits,
        ..StandaloneConfig::default()
    })
    .await
    .expect("standalone mode starts")
}

/// Joins `room` of the club as `name` with what `options` brings.
async fn join(
    server: &Standalone,
    room: &str,
    name: &str,
    options: JoinOptions,
) -> Result<Participant, Error> {
    Participant::join_with(&signal_url(server.http, "verein", room), name, options).await
}

fn with_password(password: &str) -> JoinOptions {
    JoinOptions {
        password: Some(password.to_owned()),
        ..JoinOptions::default()
    }
}

fn with_invite(invite: &str) -> JoinOptions {
    JoinOptions {
        invite: Some(invite.to_owned()),
        ..JoinOptions::default()
    }
}

fn code(result: Result<Participant, Error>) -> String {
    match result {
        Err(Error::Refused { code, .. }) => code,
        Err(error) => panic!("refused otherwise: {error}"),
        Ok(_) => "admitted".to_owned(),
    }
}

fn room(name: &str) -> RoomKey {
    RoomKey {
        tenant: TenantName::new("verein").unwrap(),
        name: RoomName::new(name).unwrap(),
    }
}

/// The invitation in a link that `treffpunkt invite` printed for `room` from the manifests.
fn invitation(room: &str) -> String {
    let dir = std::env::temp_dir().join(format!("treffpunkt-access-{}", support::free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifests = dir.join("verein.yaml");
    std::fs::write(&manifests, MANIFESTS).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
        .args([
            "invite",
            "verein",
            room,
            "--valid-hours",
            "2",
            "--manifests",
        ])
        .arg(&manifests)
        .output()
        .expect("treffpunkt invite runs");
    let _ = std::fs::remove_dir_all(dir);
    assert!(output.status.success(), "{output:?}");
    let link = String::from_utf8(output.stdout).unwrap();
    let (url, token) = link
        .trim()
        .split_once("#invite=")
        .expect("a link with an invitation");
    assert_eq!(url, format!("http://127.0.0.1:8080/verein/{room}"));
    token.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_room_asks_for_its_password_and_stops_a_guesser() {
    let limits = Limits {
        wrong_passwords: 3,
        ..Limits::default()
    };
    let server = start(limits).await;
    let nothing = JoinOptions::default();
    assert_eq!(
        code(join(&server, "training", "Anna", nothing).await),
        "password-required"
    );
    assert_eq!(
        code(join(&server, "training", "Anna", with_password("aufschlag")).await),
        "password-wrong"
    );
    let anna = join(
        &server,
        "training",
        "Anna",
        JoinOptions {
            publish: Some(Publish::default()),
            ..with_password("Aufschlag")
        },
    )
    .await
    .expect("Anna knows the password");
    let ben = join(&server, "training", "Ben", with_password("Aufschlag"))
        .await
        .expect("so does Ben");
    assert!(keeps_receiving(&ben, &anna).await, "Ben receives Anna");

    // A guesser from this address: two more wrong ones, and then not even the right one is
    // tried for this room. Another room is not affected.
    for guess in ["Netz", "Satz"] {
        assert_eq!(
            code(join(&server, "training", "Eve", with_password(guess)).await),
            "password-wrong"
        );
    }
    assert_eq!(
        code(join(&server, "training", "Eve", with_password("Aufschlag")).await),
        "too-many-attempts"
    );
    let clara = join(&server, "kasse", "Clara", with_password("Beleg")).await;
    assert!(
        clara.is_ok(),
        "the password from the Secret's data opens the other room"
    );
    assert!(
        keeps_receiving(&ben, &anna).await,
        "the call went on meanwhile"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_only_room_lets_in_only_with_an_invitation_into_it() {
    let server = start(Limits::default()).await;
    assert_eq!(
        code(join(&server, "vorstand", "Anna", JoinOptions::default()).await),
        "invite-required"
    );
    // Signed with another key, made for another room, expired: none of them opens the door.
    let now = invite::now();
    let hour = invite::Link {
        valid: Duration::from_secs(3600),
        moderator: false,
    };
    let foreign = invite::link(
        "x",
        &room("vorstand"),
        b"someone else's key, long enough",
        hour,
        now,
    );
    let elsewhere = invitation("training");
    let key = b"the club's own signing key, long enough";
    let expired = invite::link("x", &room("vorstand"), key, hour, now - 2 * 3_600_000);
    let token = |link: &str| link.split_once("#invite=").unwrap().1.to_owned();
    for (invite, expected) in [
        (token(&foreign), "invite-invalid"),
        (elsewhere, "invite-invalid"),
        (token(&expired), "invite-expired"),
        ("not an invitation".to_owned(), "invite-invalid"),
    ] {
        assert_eq!(
            code(join(&server, "vorstand", "Eve", with_invite(&invite)).await),
            expected
        );
    }

    // The link from `treffpunkt invite` lets in whoever has it.
    let invite = invitation("vorstand");
    let anna = join(
        &server,
        "vorstand",
        "Anna",
        JoinOptions {
            publish: Some(Publish::default()),
            ..with_invite(&invite)
        },
    )
    .await
    .expect("Anna has the invitation");
    let ben = join(&server, "vorstand", "Ben", with_invite(&invite))
        .await
        .expect("Ben has the same link");
    assert!(keeps_receiving(&ben, &anna).await, "Ben receives Anna");
    server.stop();
}

/// What `participant` is answered when it asks for an invitation in the call: the invitation,
/// or the refusal's code.
async fn ask_invitation(participant: &mut Participant) -> Result<Option<String>, String> {
    participant.send(ClientMessage::Invitation);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match participant.next_event(left).await {
            Some(RoomEvent::Notice(ServerMessage::Invitation { invite, .. })) => return Ok(invite),
            Some(RoomEvent::Error { code }) => return Err(code),
            Some(_) => continue,
            None => return Err("no answer".to_owned()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_call_only_a_moderator_of_an_invite_only_room_gets_an_invitation() {
    let server = start(Limits::default()).await;
    let mut guest = join(
        &server,
        "vorstand",
        "Gast",
        with_invite(&invitation("vorstand")),
    )
    .await
    .expect("a guest with the link");
    assert!(!guest.moderator);
    assert_eq!(
        ask_invitation(&mut guest).await,
        Err("not-moderator".to_owned()),
        "a guest may not invite into an invite-only room"
    );

    let chair_link = invite::link(
        "x",
        &room("vorstand"),
        b"the club's own signing key, long enough",
        invite::Link {
            valid: Duration::from_secs(3600),
            moderator: true,
        },
        invite::now(),
    );
    let chair_invite = chair_link.split_once("#invite=").unwrap().1;
    let mut chair = join(&server, "vorstand", "Vorsitz", with_invite(chair_invite))
        .await
        .expect("the chair with a moderator's link");
    assert!(chair.moderator);
    let fresh = ask_invitation(&mut chair)
        .await
        .expect("the chair gets an invitation")
        .expect("one to pass on");
    assert_ne!(fresh, chair_invite, "a new one, not the chair's own");
    let dora = join(&server, "vorstand", "Dora", with_invite(&fresh))
        .await
        .expect("the invitation from the call lets Dora in");
    assert!(!dora.moderator, "as a guest");

    // In a room whose address lets people in, the address is the invitation.
    let mut anna = join(&server, "training", "Anna", with_password("Aufschlag"))
        .await
        .expect("Anna knows the password");
    assert_eq!(ask_invitation(&mut anna).await, Ok(None));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_name_in_an_invite_only_space_becomes_a_room_only_for_the_invited() {
    let server = start(Limits::default()).await;
    assert_eq!(
        code(join(&server, "sommerfest", "Eve", JoinOptions::default()).await),
        "invite-required"
    );
    assert!(
        server
            .store
            .room(&room("sommerfest"))
            .await
            .unwrap()
            .is_none(),
        "a refused join leaves no room behind"
    );
    let invite = invitation("sommerfest");
    let anna = join(&server, "sommerfest", "Anna", with_invite(&invite)).await;
    assert!(anna.is_ok(), "the invited open the new room");
    assert!(
        server
            .store
            .room(&room("sommerfest"))
            .await
            .unwrap()
            .is_some()
    );
    server.stop();
}

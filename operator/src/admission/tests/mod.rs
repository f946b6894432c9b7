//! The join, placement and resume against the in-memory store and a real fleet whose nodes are
//! attached without sockets: what each node is told arrives on its command channel.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use treffpunkt_proto::features::Features;
use treffpunkt_proto::v1::control_message::Kind as ControlKind;

use super::*;
use crate::domain::{RoomLifetime, RoomName, TenantName};
use crate::store::MemoryStore;

mod resume;
mod spanning;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const TICKET_SECRET: &[u8] = b"tickets tickets tickets tickets!";

fn keys() -> Keys {
    Keys::new(
        Keyring::from_secret(SECRET),
        Keyring::from_secret(TICKET_SECRET),
    )
}

/// A control plane with attached nodes; each node's commands wait in `nodes`.
struct Platform {
    admission: Admission<MemoryStore>,
    store: Arc<MemoryStore>,
    fleet: Arc<Fleet>,
    nodes: HashMap<&'static str, mpsc::Receiver<v1::ControlMessage>>,
}

impl Platform {
    fn new(store: MemoryStore) -> Self {
        let store = Arc::new(store);
        let fleet = Arc::new(Fleet::default());
        Self {
            admission: Admission::new(store.clone(), fleet.clone(), keys()),
            store,
            fleet,
            nodes: HashMap::new(),
        }
    }

    /// The public space only, with `rooms`.
    fn public(rooms: impl IntoIterator<Item = Room>) -> Self {
        Self::new(MemoryStore::seeded([Tenant::public()], rooms))
    }

    /// Attaches node `id` of `pool`, of this release, taking 10 participants.
    fn attach(&mut self, id: &'static str, pool: &str) {
        self.attach_as(id, pool, Features::ALL);
    }

    /// Attaches node `id` of `pool` that understands `features`, taking 10 participants.
    fn attach_as(&mut self, id: &'static str, pool: &str, features: Features) {
        let (tx, rx) = mpsc::channel(64);
        let register = v1::Register {
            node_id: id.to_owned(),
            pool: pool.to_owned(),
            capacity: Some(v1::Capacity {
                max_participants: 10,
            }),
            instance_id: format!("{id}-first"),
            media_addresses: vec![v1::MediaAddress {
                protocol: v1::TransportProtocol::Udp as i32,
                ip: format!("10.0.0.{}", id.as_bytes()[0]),
                port: 10_000,
            }],
            features: features.names(),
            ..v1::Register::default()
        };
        self.fleet
            .attach(register, tx)
            .expect("a node id attaches once");
        self.nodes.insert(id, rx);
    }

    /// Gives node `id` `sessions` participants in another room.
    async fn load(&self, id: &str, sessions: usize) -> Vec<mpsc::Receiver<ClientEvent>> {
        let mut events = Vec::new();
        for n in 0..sessions {
            let open = v1::OpenSession {
                session_id: format!("{id}-load-{n}"),
                ..v1::OpenSession::default()
            };
            let node = NodeId(id.to_owned());
            events.push(
                self.fleet
                    .open_session(&node, key("busy"), open)
                    .await
                    .unwrap(),
            );
        }
        events
    }

    /// What node `id` was told since the last call.
    fn commands(&mut self, id: &str) -> Vec<ControlKind> {
        let rx = self.nodes.get_mut(id).expect("an attached node");
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|message| message.kind)
            .collect()
    }

    /// The sessions node `id` was asked to open since the last call.
    fn opened(&mut self, id: &str) -> Vec<v1::OpenSession> {
        self.commands(id)
            .into_iter()
            .filter_map(|kind| match kind {
                ControlKind::OpenSession(open) => Some(open),
                _ => None,
            })
            .collect()
    }

    /// Resumes with `ticket` in `room` while node `id` answers `outcome` to the resume it is
    /// asked; returns the result and what the node was asked, if anything.
    async fn resume_answered(
        &mut self,
        room: &str,
        ticket: &str,
        id: &str,
        outcome: v1::ResumeOutcome,
    ) -> (Result<Admitted, Refusal>, Option<v1::ResumeSession>) {
        let rx = self.nodes.get_mut(id).expect("an attached node");
        let (fleet, node) = (self.fleet.clone(), NodeId(id.to_owned()));
        let answering = async {
            let asked = loop {
                if let Some(ControlKind::ResumeSession(asked)) = rx.recv().await?.kind {
                    break asked;
                }
            };
            let answer = v1::ResumeAnswer {
                session_id: asked.session_id.clone(),
                request_id: asked.request_id,
                outcome: outcome as i32,
                generation: asked.generation + 1,
            };
            fleet.answer_resume(&node, answer);
            Some(asked)
        };
        let answering = tokio::time::timeout(Duration::from_secs(1), answering);
        let room = key(room);
        let (result, asked) = tokio::join!(self.admission.resume(&room, ticket, None), answering);
        (result, asked.ok().flatten())
    }

    async fn stored(&self, name: &str) -> Option<Room> {
        self.store.room(&key(name)).await.unwrap()
    }
}

fn key(name: &str) -> RoomKey {
    RoomKey {
        tenant: TenantName::new("public").unwrap(),
        name: RoomName::new(name).unwrap(),
    }
}

fn persistent(name: &str, max_participants: Option<u32>) -> Room {
    Room {
        lifetime: RoomLifetime::Persistent,
        max_participants,
        ..Room::adhoc(key(name))
    }
}

fn node(id: &str) -> NodeId {
    NodeId(id.to_owned())
}

fn code<T: std::fmt::Debug>(result: Result<T, Refusal>) -> RefusalCode {
    result.expect_err("a refusal").code
}

#[tokio::test]
async fn a_join_opens_a_session_with_a_signed_grant_on_the_room_s_node() {
    let mut platform = Platform::public([persistent("chor", Some(5))]);
    platform.attach("a", "");

    let admitted = platform
        .admission
        .join(&key("chor"), "  Anna ", &Credentials::default())
        .await
        .unwrap();

    assert_eq!(admitted.member.name.as_str(), "Anna");
    assert_eq!(admitted.member.max_participants, 5, "the room's own limit");
    assert!(!admitted.moved);
    assert_eq!(admitted.attachment.node, node("a"));
    assert_eq!(
        platform.stored("chor").await.unwrap().nodes,
        vec![node("a")]
    );
    let [open] = platform.opened("a").try_into().expect("one session opened");
    assert_eq!(open.session_id, admitted.attachment.session_id);
    let token = open.grant.expect("a grant");
    let grant = keys()
        .grants
        .get()
        .open_grant(&token, "a", 0)
        .expect("a grant for node a");
    assert_eq!(grant.participant_id, admitted.member.participant_id);
    assert_eq!(grant.display_name, "Anna");
    assert_eq!(grant.room.unwrap().to_string(), "public/chor");
    assert!(
        keys()
            .grants
            .get()
            .open_ticket(&admitted.attachment.ticket, 0)
            .is_err(),
        "the ticket is not signed with the key the nodes hold"
    );
    let ticket = keys()
        .tickets
        .get()
        .open_ticket(&admitted.attachment.ticket, 0)
        .unwrap();
    assert_eq!(ticket.session_id, admitted.attachment.session_id);
    assert_eq!(ticket.node_id, "a");
}

#[tokio::test]
async fn a_new_name_creates_an_adhoc_room_where_the_tenant_allows_it() {
    let mut platform = Platform::public([]);
    platform.attach("a", "");

    platform
        .admission
        .join(&key("neu"), "Anna", &Credentials::default())
        .await
        .unwrap();

    let room = platform.stored("neu").await.expect("the room was created");
    assert_eq!(room.lifetime, RoomLifetime::AdHoc);
    assert_eq!(room.nodes, vec![node("a")]);
}

#[tokio::test]
async fn an_unknown_tenant_or_a_new_name_without_adhoc_rooms_is_not_found() {
    let mut closed = Tenant::public();
    closed.policy.adhoc_rooms = false;
    let mut platform = Platform::new(MemoryStore::with_tenants([closed]));
    platform.attach("a", "");

    assert_eq!(
        code(
            platform
                .admission
                .join(&key("neu"), "Anna", &Credentials::default())
                .await
        ),
        RefusalCode::RoomNotFound
    );
    assert!(
        platform.stored("neu").await.is_none(),
        "nothing was created"
    );
    let elsewhere = RoomKey {
        tenant: TenantName::new("nobody").unwrap(),
        name: RoomName::new("chor").unwrap(),
    };
    assert_eq!(
        code(
            platform
                .admission
                .join(&elsewhere, "Anna", &Credentials::default())
                .await
        ),
        RefusalCode::RoomNotFound
    );
    assert!(platform.opened("a").is_empty(), "no session was opened");
}

#[tokio::test]
async fn bad_names_are_refused_with_their_own_codes() {
    let mut platform = Platform::public([persistent("chor", None)]);
    platform.attach("a", "");
    let admission = &platform.admission;
    assert_eq!(
        code(
            admission
                .join(&key("chor"), "   ", &Credentials::default())
                .await
        ),
        RefusalCode::NameEmpty
    );
    assert_eq!(
        code(
            admission
                .join(&key("chor"), &"x".repeat(65), &Credentials::default())
                .await
        ),
        RefusalCode::NameTooLong
    );
    assert_eq!(
        code(
            admission
                .join(&key("chor"), "Eve\nadmin joined", &Credentials::default())
                .await
        ),
        RefusalCode::NameInvalid
    );
}

#[tokio::test]
async fn a_full_room_refuses_the_next_person() {
    let mut platform = Platform::public([persistent("klein", Some(1))]);
    platform.attach("a", "");

    let first = platform
        .admission
        .join(&key("klein"), "Anna", &Credentials::default())
        .await;
    assert!(first.is_ok());
    let second = platform
        .admission
        .join(&key("klein"), "Ben", &Credentials::default())
        .await;
    let refusal = second.expect_err("the room is full");
    assert_eq!(refusal.code, RefusalCode::RoomFull);
    assert_eq!(refusal.code.as_str(), "room-full");
    assert_eq!(
        platform.opened("a").len(),
        1,
        "only the first got a session"
    );
}

#[tokio::test]
async fn a_suspended_tenant_admits_nobody() {
    let mut suspended = Tenant::public();
    suspended.suspended = true;
    let mut platform = Platform::new(MemoryStore::seeded([suspended], [persistent("chor", None)]));
    platform.attach("a", "");

    assert_eq!(
        code(
            platform
                .admission
                .join(&key("chor"), "Anna", &Credentials::default())
                .await
        ),
        RefusalCode::TenantSuspended
    );
    assert!(platform.opened("a").is_empty());
}

#[tokio::test]
async fn without_a_node_the_platform_is_full() {
    let platform = Platform::public([persistent("chor", None)]);
    assert_eq!(
        code(
            platform
                .admission
                .join(&key("chor"), "Anna", &Credentials::default())
                .await
        ),
        RefusalCode::PlatformFull
    );
    assert_eq!(
        platform.stored("chor").await.unwrap().nodes,
        Vec::<NodeId>::new()
    );
}

#[tokio::test]
async fn a_room_stays_on_its_live_node_even_when_another_is_idle() {
    let placed = Room {
        nodes: vec![node("b")],
        ..persistent("chor", None)
    };
    let mut platform = Platform::public([placed]);
    platform.attach("a", "");
    platform.attach("b", "");
    let _busy = platform.load("b", 5).await;
    platform.commands("b");

    let admitted = platform
        .admission
        .join(&key("chor"), "Anna", &Credentials::default())
        .await
        .unwrap();

    assert_eq!(admitted.attachment.node, node("b"));
    assert_eq!(platform.opened("b").len(), 1);
}

#[tokio::test]
async fn a_room_on_a_node_that_is_gone_is_placed_again() {
    let placed = Room {
        nodes: vec![node("gone")],
        ..persistent("chor", None)
    };
    let mut platform = Platform::public([placed]);
    platform.attach("a", "");

    let admitted = platform
        .admission
        .join(&key("chor"), "Anna", &Credentials::default())
        .await
        .unwrap();

    assert_eq!(admitted.attachment.node, node("a"));
    assert_eq!(
        platform.stored("chor").await.unwrap().nodes,
        vec![node("a")]
    );
}

#[tokio::test]
async fn a_new_room_goes_to_the_least_loaded_node_of_a_pool_the_tenant_may_use() {
    let mut tenant = Tenant::public();
    tenant.media_pools = vec!["shared".into()];
    let mut platform = Platform::new(MemoryStore::with_tenants([tenant]));
    // "a" would win on every count, but its pool is not the tenant's.
    platform.attach("a", "reserved");
    platform.attach("b", "shared");
    platform.attach("c", "shared");
    let _busy = platform.load("b", 3).await;

    let admitted = platform
        .admission
        .join(&key("neu"), "Anna", &Credentials::default())
        .await
        .unwrap();

    assert_eq!(admitted.attachment.node, node("c"));
}

#[tokio::test]
async fn rooms_that_other_gateways_recorded_on_a_node_count_as_its_load() {
    let elsewhere = |name| Room {
        nodes: vec![node("a")],
        ..persistent(name, None)
    };
    let mut platform = Platform::public([elsewhere("eins"), elsewhere("zwei")]);
    platform.attach("a", "");
    platform.attach("b", "");

    let admitted = platform
        .admission
        .join(&key("neu"), "Anna", &Credentials::default())
        .await
        .unwrap();

    assert_eq!(
        admitted.attachment.node,
        node("b"),
        "equal participants, fewer rooms"
    );
}

#[tokio::test]
async fn two_racing_placements_agree_on_one_node() {
    let mut platform = Platform::public([persistent("chor", None)]);
    platform.attach("a", "");
    platform.attach("b", "");
    let tenant = Tenant::public();
    // Both gateways read the room before either placed it.
    let read_by_both = platform.stored("chor").await.unwrap();

    let first = platform
        .admission
        .place(&tenant, read_by_both.clone(), None)
        .await
        .unwrap();
    // The second would now choose the other, emptier node; its compare-and-set fails, and it
    // finds the room on the first one's node.
    let second = platform
        .admission
        .place(&tenant, read_by_both, None)
        .await
        .unwrap();

    assert_eq!(first, (node("a"), vec![node("a")]));
    assert_eq!(second, first);
    assert_eq!(platform.stored("chor").await.unwrap().nodes, first.1);
}

/// Joins `name` as `who` and expects the refusal `expected`; the room must not exist after.
async fn refused_without_a_trace(
    platform: &Platform,
    name: &str,
    who: &str,
    expected: RefusalCode,
) {
    assert_eq!(
        code(
            platform
                .admission
                .join(&key(name), who, &Credentials::default())
                .await
        ),
        expected
    );
    assert!(
        platform.stored(name).await.is_none(),
        "a join refused with {expected} created the room {name}"
    );
}

#[tokio::test]
async fn a_join_refused_for_a_suspended_tenant_creates_no_room() {
    let mut suspended = Tenant::public();
    suspended.suspended = true;
    let mut platform = Platform::new(MemoryStore::with_tenants([suspended]));
    platform.attach("a", "");

    refused_without_a_trace(&platform, "neu", "Anna", RefusalCode::TenantSuspended).await;
    assert!(platform.opened("a").is_empty());
}

#[tokio::test]
async fn a_join_refused_because_the_platform_is_full_creates_no_room() {
    let mut platform = Platform::public([]);
    refused_without_a_trace(&platform, "leer", "Anna", RefusalCode::PlatformFull).await;

    // A node that is there but full is no better.
    platform.attach("a", "");
    let _busy = platform.load("a", 10).await;
    refused_without_a_trace(&platform, "voll", "Anna", RefusalCode::PlatformFull).await;
}

#[tokio::test]
async fn a_join_refused_for_its_name_creates_no_room() {
    let mut platform = Platform::public([]);
    platform.attach("a", "");

    refused_without_a_trace(&platform, "neu", "   ", RefusalCode::NameEmpty).await;
    refused_without_a_trace(
        &platform,
        "neu",
        "\u{200B}\u{200D}",
        RefusalCode::NameInvalid,
    )
    .await;
    refused_without_a_trace(
        &platform,
        "neu",
        "Eve\u{202E}nimda",
        RefusalCode::NameInvalid,
    )
    .await;
}

#[tokio::test]
async fn a_join_refused_for_the_tenant_s_room_limit_creates_no_room() {
    let mut tenant = Tenant::public();
    tenant.limits.max_rooms = 1;
    let mut platform = Platform::new(MemoryStore::seeded([tenant], [persistent("chor", None)]));
    platform.attach("a", "");

    refused_without_a_trace(&platform, "neu", "Anna", RefusalCode::RoomLimit).await;
    assert_eq!(
        platform
            .store
            .count_rooms(&key("neu").tenant)
            .await
            .unwrap(),
        1
    );
    // The room that exists still admits people.
    assert!(
        platform
            .admission
            .join(&key("chor"), "Anna", &Credentials::default())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_join_that_fails_after_creating_its_room_removes_it_again() {
    let mut platform = Platform::public([]);
    platform.attach("a", "");
    // The node's stream breaks without the fleet noticing yet: opening the session fails.
    platform.nodes.remove("a");

    refused_without_a_trace(&platform, "neu", "Anna", RefusalCode::Unavailable).await;
}

// The sweeper is driven with the time passed in: a virtual clock that starts now.

#[tokio::test]
async fn a_new_room_nobody_is_in_after_a_minute_is_removed() {
    let mut platform = Platform::public([]);
    platform.attach("a", "");
    let start = Instant::now();
    let joined = platform
        .admission
        .join(&key("neu"), "Anna", &Credentials::default())
        .await
        .unwrap();
    // Anna leaves (or her media never connects and the node ends her session).
    platform
        .fleet
        .close_session(&joined.attachment.session_id, v1::CloseReason::Left)
        .await;

    let next = platform
        .admission
        .sweep_unjoined(start + Duration::from_secs(59))
        .await;
    assert!(platform.stored("neu").await.is_some(), "kept for a minute");
    assert!(next.is_some_and(|due| due <= start + Duration::from_secs(61)));
    let next = platform
        .admission
        .sweep_unjoined(start + Duration::from_secs(61))
        .await;
    assert!(platform.stored("neu").await.is_none(), "removed after it");
    assert_eq!(next, None, "nothing left to look at");
}

#[tokio::test]
async fn a_new_room_with_someone_in_it_after_a_minute_stays() {
    let mut platform = Platform::public([]);
    platform.attach("a", "");
    let start = Instant::now();
    let _anna = platform
        .admission
        .join(&key("neu"), "Anna", &Credentials::default())
        .await
        .unwrap();

    let next = platform
        .admission
        .sweep_unjoined(start + Duration::from_secs(61))
        .await;
    assert!(platform.stored("neu").await.is_some());
    assert_eq!(
        next, None,
        "the ordinary grace for empty rooms applies from now on"
    );
}

#[tokio::test]
async fn a_new_room_that_a_second_join_shares_is_kept_while_someone_is_in_it() {
    let mut platform = Platform::public([]);
    platform.attach("a", "");
    let start = Instant::now();
    let anna = platform
        .admission
        .join(&key("neu"), "Anna", &Credentials::default())
        .await
        .unwrap();
    let _ben = platform
        .admission
        .join(&key("neu"), "Ben", &Credentials::default())
        .await
        .unwrap();
    platform
        .fleet
        .close_session(&anna.attachment.session_id, v1::CloseReason::Left)
        .await;

    platform
        .admission
        .sweep_unjoined(start + Duration::from_secs(61))
        .await;
    assert!(platform.stored("neu").await.is_some(), "Ben is still there");
}

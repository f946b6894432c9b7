//! Rooms larger than a node: a room whose nodes are full spreads to another, and its nodes are
//! linked.

use super::*;
use crate::domain::PoolAccess;

/// The links node `id` was asked to open since the last look, and whether the session came
/// after them.
fn links_then_session(platform: &mut Platform, id: &str) -> (Vec<v1::OpenLink>, bool) {
    let commands = platform.commands(id);
    let links: Vec<v1::OpenLink> = commands
        .iter()
        .filter_map(|kind| match kind {
            ControlKind::OpenLink(open) => Some(open.clone()),
            _ => None,
        })
        .collect();
    let first_session = commands
        .iter()
        .position(|kind| matches!(kind, ControlKind::OpenSession(_)));
    let last_link = commands
        .iter()
        .rposition(|kind| matches!(kind, ControlKind::OpenLink(_)));
    let ordered =
        matches!((last_link, first_session), (Some(link), Some(session)) if link < session);
    (links, ordered)
}

#[tokio::test]
async fn a_node_of_an_earlier_release_is_sent_only_what_it_understands() {
    // While the fleet is upgraded one node at a time: a of this release, b of the one before.
    let mut platform = Platform::public([]);
    platform.attach("a", "");
    platform.attach_as("b", "", Features::default());
    placed(&platform, "rat", "Anna", &Credentials::default()).await;
    let _busy = platform.load("a", 9).await;
    platform.commands("a");
    let ben = placed(&platform, "rat", "Ben", &Credentials::default()).await;
    assert_eq!(ben, node("b"), "the room spreads to b");
    let (at_a, _) = links_then_session(&mut platform, "a");
    let (at_b, _) = links_then_session(&mut platform, "b");
    assert_eq!((at_a.len(), at_b.len()), (1, 1));
    assert!(
        at_a[0].peer_features.is_empty(),
        "a sends b only the forms every release understands"
    );
    assert_eq!(
        at_b[0].peer_features,
        Features::ALL.names(),
        "what b may send a is b's to know"
    );
}

/// Nodes a and b, and Anna in the room "rat" on a.
async fn anna_on_a_of_two() -> Platform {
    let mut platform = Platform::public([]);
    platform.attach("a", "");
    platform.attach("b", "");
    let anna = placed(&platform, "rat", "Anna", &Credentials::default()).await;
    assert_eq!(anna, node("a"));
    platform
}

/// The node that `name` is placed on when joining `room` with `credentials`.
async fn placed(platform: &Platform, room: &str, name: &str, credentials: &Credentials) -> NodeId {
    let joined = platform.admission.join(&key(room), name, credentials).await;
    joined.unwrap().attachment.node
}

#[tokio::test]
async fn a_room_whose_node_is_full_spreads_to_another_and_the_two_are_linked() {
    let mut platform = Platform::public([]);
    platform.attach("a", "");
    platform.attach("b", "");
    let anna = platform
        .admission
        .join(&key("rat"), "Anna", &Credentials::default())
        .await
        .unwrap();
    assert_eq!(anna.attachment.node, node("a"));
    // Node a fills up with another room's participants.
    let _busy = platform.load("a", 9).await;
    platform.commands("a");

    let ben = platform
        .admission
        .join(&key("rat"), "Ben", &Credentials::default())
        .await
        .unwrap();
    assert_eq!(ben.attachment.node, node("b"), "the room spreads to b");
    assert_eq!(
        platform.stored("rat").await.unwrap().nodes,
        vec![node("a"), node("b")],
        "the room's record names both nodes"
    );
    let (at_a, _) = links_then_session(&mut platform, "a");
    let (at_b, ordered) = links_then_session(&mut platform, "b");
    assert_eq!(
        (at_a.len(), at_b.len()),
        (1, 1),
        "one link, opened on both ends"
    );
    let (link_a, link_b) = (&at_a[0], &at_b[0]);
    assert_eq!(link_a.link_id, link_b.link_id);
    assert_eq!(link_a.key, link_b.key);
    assert_eq!(link_a.key.len(), 32);
    assert_ne!(link_a.first, link_b.first, "the two ends seal differently");
    assert_eq!(
        (link_a.peer_node.as_str(), link_b.peer_node.as_str()),
        ("b", "a")
    );
    assert_eq!(
        link_a.address.as_ref().unwrap().ip,
        "10.0.0.98",
        "a sends to b's media port"
    );
    assert_eq!(link_a.room, "public/rat");
    assert_eq!(
        (&link_a.peer_features, &link_b.peer_features),
        (&Features::ALL.names(), &Features::ALL.names()),
        "each end may send what both understand"
    );
    assert!(ordered, "b knows the link before ben's session opens there");

    // A third participant finds room on b: nothing new to link.
    platform
        .admission
        .join(&key("rat"), "Carla", &Credentials::default())
        .await
        .unwrap();
    assert!(links_then_session(&mut platform, "b").0.is_empty());

    // The link carries what a says to b, and nothing that names another link.
    let relay = |link_id: u64, to: &str| v1::RoomRelay {
        link_id,
        room: "public/rat".into(),
        to_node: to.into(),
        kind: Some(v1::room_relay::Kind::Locked(true)),
    };
    platform.fleet.relay(&node("a"), relay(link_a.link_id, "b"));
    platform
        .fleet
        .relay(&node("a"), relay(link_a.link_id ^ 1, "b"));
    platform.fleet.relay(&node("c"), relay(link_a.link_id, "b"));
    let carried: Vec<v1::RoomRelay> = platform
        .commands("b")
        .into_iter()
        .filter_map(|kind| match kind {
            ControlKind::Relayed(relayed) => Some(relayed),
            _ => None,
        })
        .collect();
    assert_eq!(
        carried.len(),
        1,
        "only the message on a's own link is carried"
    );
    assert_eq!(carried[0].link_id, link_a.link_id);
}

#[tokio::test]
async fn a_join_to_a_room_whose_nodes_filled_up_is_refused_without_asking_them() {
    let mut platform = anna_on_a_of_two().await;
    // Both nodes fill up with another room's participants: a has Anna and 9 more, b 10.
    let _busy = (platform.load("a", 9).await, platform.load("b", 10).await);
    platform.commands("a");
    platform.commands("b");
    let ben = platform
        .admission
        .join(&key("rat"), "Ben", &Credentials::default())
        .await;
    assert_eq!(code(ben), RefusalCode::PlatformFull);
    assert!(
        platform.opened("a").is_empty() && platform.opened("b").is_empty(),
        "no node was asked to open a session it has no place for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_that_race_for_a_node_s_last_places_spread_instead_of_being_refused() {
    let mut platform = anna_on_a_of_two().await;
    // a has Anna and 6 more: three places left, for twelve who join at once.
    let _busy = platform.load("a", 6).await;
    platform.commands("a");
    let admission = Arc::new(platform.admission);
    let joins: Vec<_> = (0..12)
        .map(|n| {
            let admission = admission.clone();
            tokio::spawn(async move {
                let name = format!("Gast {n}");
                admission
                    .join(&key("rat"), &name, &Credentials::default())
                    .await
                    .map(|joined| joined.attachment.node)
            })
        })
        .collect();
    let mut placed = HashMap::new();
    for join in joins {
        let node = join.await.unwrap().expect("nobody is refused");
        *placed.entry(node).or_insert(0) += 1;
    }
    assert_eq!(placed.get(&node("a")), Some(&3), "{placed:?}");
    assert_eq!(placed.get(&node("b")), Some(&9), "{placed:?}");
}

#[tokio::test]
async fn a_lost_node_s_links_are_closed_at_the_other_end() {
    let mut platform = anna_on_a_of_two().await;
    let _busy = platform.load("a", 9).await;
    placed(&platform, "rat", "Ben", &Credentials::default()).await;
    let (links, _) = links_then_session(&mut platform, "b");
    platform.commands("a");
    platform.fleet.lose_now(&node("a"));
    let closed: Vec<u64> = platform
        .commands("b")
        .into_iter()
        .filter_map(|kind| match kind {
            ControlKind::CloseLink(close) => Some(close.link_id),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![links[0].link_id]);
}

#[tokio::test]
async fn a_room_on_a_node_that_drains_slowly_stays_one_room() {
    let mut platform = anna_on_a_of_two().await;
    platform.commands("a");
    // Node a drains, but lets Anna's call run to its end.
    platform.fleet.mark_draining(&node("a"), false);

    let ben = platform
        .admission
        .join(&key("rat"), "Ben", &Credentials::default())
        .await
        .unwrap();
    assert_eq!(
        ben.attachment.node,
        node("b"),
        "a draining node takes no joins"
    );
    assert_eq!(
        platform.stored("rat").await.unwrap().nodes,
        vec![node("b"), node("a")],
        "the room keeps the draining node while Anna is there, after the one that takes joins"
    );
    let (at_a, _) = links_then_session(&mut platform, "a");
    let (at_b, ordered) = links_then_session(&mut platform, "b");
    assert_eq!((at_a.len(), at_b.len()), (1, 1), "Anna and Ben are linked");
    assert_eq!(at_a[0].link_id, at_b[0].link_id);
    assert!(ordered, "b knows the link before Ben's session opens there");
}

/// The node that `name`, coming from `ip`, is placed on when joining `room`.
async fn node_for(platform: &Platform, room: &str, name: &str, ip: &str) -> NodeId {
    let credentials = Credentials {
        from: Some(ip.parse().unwrap()),
        ..Credentials::default()
    };
    placed(platform, room, name, &credentials).await
}

#[tokio::test]
async fn who_joins_from_a_pool_s_networks_is_placed_on_its_nodes_first() {
    let library = PoolAccess {
        pool: "bibliothek".into(),
        tenants: Vec::new(),
        near: vec!["10.20.0.0/16".parse().unwrap()],
    };
    let store = MemoryStore::seeded([Tenant::public()], []).with_pools([library]);
    let mut platform = Platform::new(store);
    platform.attach("a", "zentrale");
    platform.attach("b", "bibliothek");
    platform.attach("c", "zentrale");

    // A room started in the library's network starts on the library's node.
    let anna = node_for(&platform, "lesekreis", "Anna", "10.20.3.4").await;
    assert_eq!(anna, node("b"));

    // A room started elsewhere goes to the least loaded node; someone from the library joins
    // it there, as long as it has room: nearness does not spread a room by itself.
    assert_eq!(
        node_for(&platform, "rat", "Ben", "192.0.2.7").await,
        node("a")
    );
    assert_eq!(
        node_for(&platform, "rat", "Carla", "10.20.9.9").await,
        node("a")
    );

    // Once a is full, the room spreads to the library's node for a library visitor, although c
    // is less loaded.
    let _busy = platform.load("a", 8).await;
    let dora = node_for(&platform, "rat", "Dora", "10.20.9.10").await;
    assert_eq!(dora, node("b"), "the library's node is near Dora");
    assert_eq!(
        platform.stored("rat").await.unwrap().nodes,
        vec![node("a"), node("b")]
    );
}

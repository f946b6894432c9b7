//! A fleet of real processes: two control-plane replicas (`treffpunkt operator`, against the
//! real API server of `deploy/testenv`) and three media nodes (`treffpunkt media-node`), all
//! on loopback, with Rust participants joining through both gateways.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kube::api::PostParams;
use kube::{Api, Client};
use support::events::{moderate, notice};
use support::{NodeProcess, OperatorProcess, admin, ensure_namespace, eventually, unique};
use treffpunkt_client::signalling::{ModerationAction, ServerMessage};
use treffpunkt_client::{Kind, Participant, Publish, RoomEvent, signal_url};
use treffpunkt_operator::crd::{self, Room, Tenant, TenantSpec};

/// These tests run one at a time: each runs a fleet of its own on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Light media, so that dozens of participants fit on a test machine.
fn light() -> Publish {
    Publish {
        video_fps: 10,
        video_packet_size: 400,
        keyframe_interval: 10,
        audio_packet_size: 80,
    }
}

struct Fleet {
    client: Client,
    operators: Vec<OperatorProcess>,
    nodes: Vec<NodeProcess>,
}

impl Fleet {
    /// Two replicas, three nodes attached to both, and the public tenant.
    async fn start() -> Self {
        let client = admin().await;
        ensure_namespace(&client, support::PLATFORM).await;
        let tenants = Api::<Tenant>::all(client.clone());
        if tenants.get_opt("public").await.unwrap().is_none() {
            let spec: TenantSpec = serde_json::from_value(serde_json::json!({
                "displayName": "Treffpunkt",
                "policy": {"adhocRooms": true},
                "limits": {"rooms": 200, "participantsPerRoom": 10, "participants": 1000},
            }))
            .unwrap();
            let _ = tenants
                .create(&PostParams::default(), &Tenant::new("public", spec))
                .await;
        }
        let lease = unique("fleet");
        let operators = vec![
            OperatorProcess::start("gateway-a", &lease),
            OperatorProcess::start("gateway-b", &lease),
        ];
        for operator in &operators {
            assert!(operator.serving().await, "a gateway serves");
        }
        let key = support::grant_key(&client).await;
        let credential = support::pool_credential(&client, "fleet").await;
        let refs: Vec<&OperatorProcess> = operators.iter().collect();
        let nodes: Vec<NodeProcess> = (1..=3)
            .map(|i| NodeProcess::start(&unique(&format!("node{i}")), &refs, &key, &credential))
            .collect();
        for operator in &operators {
            let attached = eventually(Duration::from_secs(30), || async {
                (operator.nodes().await.len() == 3).then_some(())
            })
            .await;
            assert!(attached.is_some(), "every node attaches to every replica");
        }
        // Both gateways must know the tenant before anyone joins.
        let ready = eventually(Duration::from_secs(30), || async {
            let tenant = tenants.get("public").await.ok()?;
            crd::condition_is_true(&tenant.status?.conditions, "Ready").then_some(())
        })
        .await;
        assert!(ready.is_some(), "the public tenant is ready");
        Self {
            client,
            operators,
            nodes,
        }
    }

    fn url(&self, gateway: usize, room: &str) -> String {
        signal_url(self.operators[gateway % 2].http, "public", room)
    }

    /// The node each of `rooms` is placed on, from the Room objects.
    async fn placement(&self, rooms: &[String]) -> BTreeMap<String, String> {
        let api = Api::<Room>::namespaced(self.client.clone(), &crd::tenant_namespace("public"));
        let mut placed = BTreeMap::new();
        for room in rooms {
            if let Some(node) = api
                .get_opt(room)
                .await
                .ok()
                .flatten()
                .and_then(|r| r.status)
                .and_then(|s| s.node)
            {
                placed.insert(room.clone(), node);
            }
        }
        placed
    }
}

/// Joins `per_room` participants to each room, alternating between the two gateways.
async fn populate(fleet: &Fleet, rooms: &[String], per_room: usize) -> Vec<Vec<Participant>> {
    let mut all = Vec::new();
    let mut gateway = 0;
    for room in rooms {
        let mut members = Vec::new();
        for i in 0..per_room {
            gateway += 1;
            let participant =
                Participant::join(&fleet.url(gateway, room), &format!("p{i}"), Some(light()))
                    .await
                    .unwrap_or_else(|error| panic!("a participant joins {room}: {error}"));
            members.push(participant);
        }
        all.push(members);
    }
    all
}

/// Whether everyone in `room` receives both kinds from everyone else, `packets` of each.
fn everyone_receives(room: &[Participant], packets: u64) -> bool {
    room.iter().all(|receiver| {
        room.iter().filter(|s| s.id != receiver.id).all(|source| {
            [Kind::Audio, Kind::Video].iter().all(|kind| {
                let stats = receiver.stats(&source.id, *kind);
                assert_eq!(stats.corrupt, 0);
                stats.packets >= packets
            })
        })
    })
}

/// Whether everyone in `room` has received a packet from everyone else after `since`.
fn everyone_receives_since(room: &[Participant], since: Instant) -> bool {
    room.iter().all(|receiver| {
        room.iter().filter(|s| s.id != receiver.id).all(|source| {
            [Kind::Audio, Kind::Video].iter().all(|kind| {
                receiver
                    .stats(&source.id, *kind)
                    .last_at
                    .is_some_and(|at| at > since)
            })
        })
    })
}

async fn leave_all(rooms: Vec<Vec<Participant>>) {
    for participant in rooms.into_iter().flatten() {
        participant.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_the_nodes_and_everyone_receives_everyone() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let fleet = Fleet::start().await;
    let rooms: Vec<String> = (0..12).map(|i| unique(&format!("spread{i}"))).collect();
    let members = populate(&fleet, &rooms, 3).await;
    let receiving = eventually(Duration::from_secs(60), || async {
        members
            .iter()
            .all(|room| everyone_receives(room, 10))
            .then_some(())
    })
    .await;
    assert!(
        receiving.is_some(),
        "everyone receives everyone in their room"
    );
    let placement = fleet.placement(&rooms).await;
    assert_eq!(placement.len(), 12, "every room is placed");
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for node in placement.values() {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    assert!(
        per_node.values().all(|rooms| *rooms <= 6),
        "no node holds more than 6 rooms: {per_node:?}"
    );
    assert_eq!(per_node.len(), 3, "all three nodes are used: {per_node:?}");
    leave_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_node_dies_its_rooms_move_and_media_flows_again_within_five_seconds() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let rooms: Vec<String> = (0..4).map(|i| unique(&format!("loss{i}"))).collect();
    let mut members = populate(&fleet, &rooms, 3).await;
    let receiving = eventually(Duration::from_secs(60), || async {
        members
            .iter()
            .all(|room| everyone_receives(room, 10))
            .then_some(())
    })
    .await;
    assert!(receiving.is_some());
    let placement = fleet.placement(&rooms).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for node in placement.values() {
        *counts.entry(node.clone()).or_default() += 1;
    }
    let victim = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(id, _)| id.clone())
        .unwrap();
    let affected: Vec<usize> = rooms
        .iter()
        .enumerate()
        .filter(|(_, room)| placement.get(*room) == Some(&victim))
        .map(|(i, _)| i)
        .collect();
    // In the first affected room, the first in (who moderates) makes the third moderator too.
    let watched = &mut members[affected[0]];
    let third = watched[2].id.clone();
    moderate(&watched[0], ModerationAction::MakeModerator, Some(&third));
    let made = notice(&mut watched[2], |m| {
        matches!(
            m,
            ServerMessage::Role {
                moderator: true,
                ..
            }
        )
    })
    .await;
    assert!(made.is_some(), "the third participant moderates");
    let killed = Instant::now();
    fleet
        .nodes
        .iter_mut()
        .find(|n| n.id == victim)
        .unwrap()
        .kill();

    let back = eventually(Duration::from_secs(5), || async {
        affected
            .iter()
            .all(|room| everyone_receives_since(&members[*room], killed))
            .then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "every affected participant receives again within 5 s of the kill"
    );
    let moved = fleet.placement(&rooms).await;
    for room in &affected {
        assert_ne!(
            moved.get(&rooms[*room]),
            Some(&victim),
            "the room moved to another node"
        );
        assert!(
            members[*room].iter().all(|p| p.connections() >= 2),
            "with a new media connection"
        );
    }
    // The role went with the session: the third participant still moderates on the new node.
    let watched = &mut members[affected[0]];
    moderate(&watched[2], ModerationAction::Lock, None);
    let locked = notice(&mut watched[0], |m| {
        matches!(m, ServerMessage::RoomState { locked: true })
    })
    .await;
    assert!(
        locked.is_some(),
        "the moderator made before the move locks the room after it"
    );
    leave_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_moves_its_calls_takes_no_new_room_and_exits_cleanly() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let room = unique("drain");
    let mut members = populate(&fleet, std::slice::from_ref(&room), 3).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            everyone_receives(&members[0], 10).then_some(())
        })
        .await
        .is_some()
    );
    let host = fleet.placement(std::slice::from_ref(&room)).await[&room].clone();
    let node = fleet.nodes.iter_mut().find(|n| n.id == host).unwrap();
    let asked = Instant::now();
    // The admin asks the control plane, which tells the node over its Attach stream; the
    // node's own port takes no commands.
    let (refused, _) = support::http(node.health, "POST", "/drain").await.unwrap();
    assert_eq!(refused, 404, "the node's own port drains nothing");
    let drain = format!("/nodes/{host}/drain?move=true&grace=30");
    let admin = fleet.operators[0].admin;
    let (status, _) = support::http_as_admin(admin, "POST", &drain).await.unwrap();
    assert_eq!(status, 202);

    // The call moves: everyone receives again, over a new media connection.
    let moved = eventually(Duration::from_secs(15), || async {
        (everyone_receives_since(&members[0], asked + Duration::from_millis(500))
            && members[0].iter().all(|p| p.connections() >= 2))
        .then_some(())
    })
    .await;
    assert!(moved.is_some(), "the call moved to another node");
    assert_ne!(
        fleet.placement(std::slice::from_ref(&room)).await[&room],
        host
    );

    // The drained node exits 0 once empty.
    let node = fleet.nodes.iter_mut().find(|n| n.id == host).unwrap();
    assert_eq!(
        node.exit_code_within(Duration::from_secs(20)).await,
        Some(Some(0)),
        "the node exits 0"
    );

    // New rooms land elsewhere while it drains (and after).
    let fresh = unique("after");
    let newcomer = Participant::join(&fleet.url(0, &fresh), "neu", None)
        .await
        .unwrap();
    assert_ne!(
        fleet
            .placement(std::slice::from_ref(&fresh))
            .await
            .get(&fresh),
        Some(&host)
    );
    newcomer.leave().await;

    // Without moving, the meetings on a draining node end at its deadline.
    let other = unique("ende");
    let mut ending = populate(&fleet, std::slice::from_ref(&other), 2).await;
    let other_host = fleet.placement(std::slice::from_ref(&other)).await[&other].clone();
    let drain = format!("/nodes/{other_host}/drain?move=false&grace=2");
    let admin = fleet.operators[0].admin;
    support::http_as_admin(admin, "POST", &drain).await.unwrap();
    let closed = loop {
        match ending[0][0].next_event(Duration::from_secs(10)).await {
            Some(RoomEvent::Closed { reason }) => break Some(reason),
            Some(_) => continue,
            None => break None,
        }
    };
    assert_eq!(
        closed.as_deref(),
        Some("room-closed"),
        "the meeting ends at the deadline"
    );
    let node = fleet.nodes.iter_mut().find(|n| n.id == other_host).unwrap();
    assert_eq!(
        node.exit_code_within(Duration::from_secs(10)).await,
        Some(Some(0))
    );
    members.append(&mut ending);
    leave_all(members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_gateway_does_not_stop_the_media() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let rooms: Vec<String> = (0..2).map(|i| unique(&format!("restart{i}"))).collect();
    let members = populate(&fleet, &rooms, 3).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            members
                .iter()
                .all(|room| everyone_receives(room, 10))
                .then_some(())
        })
        .await
        .is_some()
    );
    // Sample every counter every 100 ms while the gateways restart one after the other.
    let counters = |members: &Vec<Vec<Participant>>| -> Vec<u64> {
        members
            .iter()
            .flat_map(|room| {
                room.iter().flat_map(move |receiver| {
                    room.iter()
                        .filter(move |s| s.id != receiver.id)
                        .flat_map(move |source| {
                            [Kind::Audio, Kind::Video]
                                .map(|kind| receiver.stats(&source.id, kind).packets)
                        })
                })
            })
            .collect()
    };
    let mut last = counters(&members);
    let mut last_change = vec![Instant::now(); last.len()];
    let mut longest_stall = Duration::ZERO;
    let mut sample = |members: &Vec<Vec<Participant>>| {
        let now = Instant::now();
        for (i, value) in counters(members).into_iter().enumerate() {
            if value != last[i] {
                last[i] = value;
                last_change[i] = now;
            }
            longest_stall = longest_stall.max(now.duration_since(last_change[i]));
        }
    };
    for gateway in 0..2 {
        fleet.operators[gateway].restart();
        let serving = fleet.operators[gateway].http;
        let deadline = Instant::now() + Duration::from_secs(30);
        while support::http(serving, "GET", "/healthz").await.is_none() && Instant::now() < deadline
        {
            sample(&members);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for _ in 0..30 {
            sample(&members);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        longest_stall <= Duration::from_secs(1),
        "no packet counter stopped for longer than the reporting interval: {longest_stall:?}; connections {:?}, resumes {:?}",
        members
            .iter()
            .flatten()
            .map(Participant::connections)
            .collect::<Vec<_>>(),
        members
            .iter()
            .flatten()
            .map(Participant::resumes)
            .collect::<Vec<_>>()
    );
    // Signalling works again after the restarts: a newcomer is seen by everyone.
    let resumed = eventually(Duration::from_secs(20), || async {
        members
            .iter()
            .flatten()
            .all(|p| p.resumes() >= 1)
            .then_some(())
    })
    .await;
    assert!(resumed.is_some(), "every participant resumed its session");
    let newcomer = Participant::join(&fleet.url(1, &rooms[0]), "neu", Some(light()))
        .await
        .unwrap();
    let seen = eventually(Duration::from_secs(20), || async {
        members[0]
            .iter()
            .all(|p| p.stats(&newcomer.id, Kind::Video).packets > 5)
            .then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "after the restarts, a newcomer is received by everyone"
    );
    newcomer.leave().await;
    leave_all(members).await;
}

//! Placement: which media node hosts a new room, and which of a room's nodes takes a join.
//!
//! A room that has a live node stays there. A new room goes to the least-loaded node that its
//! tenant may use, that is not draining and that has room to spare; when none has, the join is
//! refused rather than every running call degraded. A room whose nodes are all full spreads to
//! one more, chosen the same way ([`host_with_room`] first, then [`choose_node`]): a council
//! session streamed to a thousand people, or a town meeting, is larger than one node.
//!
//! Where there is a choice, nodes near the joiner come first: the nodes of a pool whose
//! `clientNetworks` hold the address the joiner came from ([`is_near`]), such as a district's
//! or a partner's site for the people on its network.

use std::fmt;
use std::net::IpAddr;

use super::{IpNet, Tenant, TenantName};

/// A media node's id, as it registered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What placement needs to know of one attached node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The node.
    pub id: NodeId,
    /// The MediaPool it belongs to (empty for a node outside any pool).
    pub pool: String,
    /// Participants the node hosts now (as it reported, plus admissions not yet reported).
    pub participants: u32,
    /// Rooms the node hosts now.
    pub rooms: u32,
    /// Participants the node accepts in total.
    pub max_participants: u32,
    /// A draining node takes no new rooms.
    pub draining: bool,
}

impl NodeView {
    /// The share of capacity in use, in thousandths, so that nodes of different sizes compare.
    fn load_permille(&self) -> u64 {
        if self.max_participants == 0 {
            return u64::MAX;
        }
        u64::from(self.participants) * 1000 / u64::from(self.max_participants)
    }

    fn has_room(&self) -> bool {
        !self.draining && self.participants < self.max_participants
    }
}

/// Which tenants a MediaPool serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolAccess {
    /// The pool.
    pub pool: String,
    /// The tenants it is reserved for; empty when it serves every tenant.
    pub tenants: Vec<TenantName>,
    /// The networks whose participants it is near; empty for none in particular.
    pub near: Vec<IpNet>,
}

/// Whether the nodes of `pool` are near a joiner who came from `from`.
pub fn is_near(pool: &str, pools: &[PoolAccess], from: Option<IpAddr>) -> bool {
    from.is_some_and(|from| {
        pools
            .iter()
            .any(|access| access.pool == pool && access.near.iter().any(|net| net.contains(from)))
    })
}

/// Whether `tenant` may have rooms on nodes of `pool`: the tenant names the pool (or names
/// none), and the pool is open to the tenant (or to everyone). Nodes outside any known pool
/// serve every tenant that does not restrict itself.
pub fn may_use(tenant: &Tenant, pool: &str, pools: &[PoolAccess]) -> bool {
    let tenant_allows =
        tenant.media_pools.is_empty() || tenant.media_pools.iter().any(|p| p == pool);
    let pool_allows = pools
        .iter()
        .find(|access| access.pool == pool)
        .is_none_or(|access| access.tenants.is_empty() || access.tenants.contains(&tenant.name));
    tenant_allows && pool_allows
}

/// Whether `pool` is one of `tenant`'s own: reserved for it, as a partner's pool of the nodes it
/// brought. A tenant's rooms go to its own nodes first, and to shared ones when those are full.
pub fn owns(tenant: &Tenant, pool: &str, pools: &[PoolAccess]) -> bool {
    pools
        .iter()
        .any(|access| access.pool == pool && access.tenants.contains(&tenant.name))
}

/// The node of a room's `hosts` that takes one more participant: the first, in the order the
/// room spread to them, that has room to spare, so that a room fills its nodes one after the
/// other and spans as few as it can (each node more relays every publication once more). A
/// host that is `near` the joiner comes before the others.
pub fn host_with_room<'a>(
    hosts: &[NodeId],
    nodes: &'a [NodeView],
    near: impl Fn(&NodeView) -> bool,
) -> Option<&'a NodeView> {
    let with_room = || {
        hosts
            .iter()
            .filter_map(|host| nodes.iter().find(|node| &node.id == host))
            .filter(|node| node.has_room())
    };
    with_room()
        .find(|node| near(node))
        .or_else(|| with_room().next())
}

/// The node for a new room: the least loaded of those that can take it and `usable` allows,
/// then the one with fewest rooms, ties broken by id so that the choice is deterministic.
/// `None` when the platform is full.
pub fn choose_node<'a>(
    nodes: impl IntoIterator<Item = &'a NodeView>,
    usable: impl Fn(&NodeView) -> bool,
) -> Option<&'a NodeView> {
    nodes
        .into_iter()
        .filter(|node| node.has_room() && usable(node))
        .min_by(|a, b| {
            a.load_permille()
                .cmp(&b.load_permille())
                .then_with(|| a.rooms.cmp(&b.rooms))
                .then_with(|| a.id.cmp(&b.id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, participants: u32, max: u32, draining: bool) -> NodeView {
        NodeView {
            id: NodeId(id.to_owned()),
            pool: String::new(),
            participants,
            rooms: 0,
            max_participants: max,
            draining,
        }
    }

    fn any(_: &NodeView) -> bool {
        true
    }

    #[test]
    fn a_join_goes_to_the_first_of_the_rooms_nodes_with_room_to_spare() {
        let nodes = [
            node("a", 10, 10, false),
            node("b", 3, 10, false),
            node("c", 0, 10, false),
        ];
        let hosts = [NodeId("a".into()), NodeId("b".into()), NodeId("c".into())];
        assert_eq!(host_with_room(&hosts, &nodes, |_| false).unwrap().id.0, "b");
        assert_eq!(
            host_with_room(&hosts, &nodes, |node| node.id.0 == "c")
                .unwrap()
                .id
                .0,
            "c",
            "a host near the joiner comes first"
        );
        let full = [NodeId("a".into())];
        assert!(
            host_with_room(&full, &nodes, any).is_none(),
            "the room must spread"
        );
        let gone = [NodeId("x".into())];
        assert!(host_with_room(&gone, &nodes, any).is_none());
    }

    #[test]
    fn a_pool_is_near_the_networks_it_names() {
        let pools = [PoolAccess {
            pool: "bibliothek".into(),
            tenants: Vec::new(),
            near: vec!["10.20.0.0/16".parse().unwrap()],
        }];
        let at = |ip: &str| Some(ip.parse().unwrap());
        assert!(is_near("bibliothek", &pools, at("10.20.3.4")));
        assert!(!is_near("bibliothek", &pools, at("10.21.3.4")));
        assert!(!is_near("zentrale", &pools, at("10.20.3.4")));
        assert!(!is_near("bibliothek", &pools, None));
    }

    #[test]
    fn picks_the_least_loaded_node_relative_to_its_size() {
        let nodes = [
            node("a", 50, 100, false),
            node("b", 30, 40, false),
            node("c", 10, 100, false),
        ];
        assert_eq!(choose_node(&nodes, any).unwrap().id.0, "c");
    }

    #[test]
    fn among_equally_loaded_nodes_the_one_with_fewest_rooms_wins() {
        let mut nodes = [node("a", 0, 100, false), node("b", 0, 100, false)];
        nodes[0].rooms = 2;
        assert_eq!(choose_node(&nodes, any).unwrap().id.0, "b");
    }

    #[test]
    fn pools_serve_only_the_tenants_they_may() {
        let mut partner = Tenant::public();
        partner.name = TenantName::new("partner").unwrap();
        let public = Tenant::public();
        let pools = [PoolAccess {
            pool: "reserved".into(),
            tenants: vec![partner.name.clone()],
            near: Vec::new(),
        }];
        assert!(may_use(&partner, "reserved", &pools));
        assert!(
            !may_use(&public, "reserved", &pools),
            "reserved for the partner"
        );
        assert!(may_use(&public, "shared", &pools), "an open pool");
        assert!(may_use(&public, "", &pools), "a node outside any pool");
        partner.media_pools = vec!["reserved".into()];
        assert!(
            !may_use(&partner, "shared", &pools),
            "the tenant restricts itself"
        );
        let mut nodes = [node("a", 0, 100, false), node("b", 50, 100, false)];
        nodes[0].pool = "reserved".into();
        let chosen = choose_node(&nodes, |n| may_use(&public, &n.pool, &pools));
        assert_eq!(chosen.unwrap().id.0, "b");
        assert!(owns(&partner, "reserved", &pools));
        assert!(!owns(&partner, "shared", &pools) && !owns(&public, "reserved", &pools));
    }

    #[test]
    fn skips_draining_and_full_nodes() {
        let nodes = [
            node("a", 0, 100, true),
            node("b", 40, 40, false),
            node("c", 99, 100, false),
        ];
        assert_eq!(choose_node(&nodes, any).unwrap().id.0, "c");
    }

    #[test]
    fn no_node_means_the_platform_is_full() {
        let nodes = [node("a", 0, 100, true), node("b", 40, 40, false)];
        assert!(choose_node(&nodes, any).is_none());
        assert!(choose_node(&[], any).is_none());
    }
}

//! The autoscaler's decisions, as a function of what the nodes report: no I/O, the time passed
//! in (the loop that acts on them is [`crate::autoscaler`]).
//!
//! A node's load is the larger of its participants against the participants it takes and its
//! CPU against the CPU its pod asked for. The pool's load is the mean over its nodes that take
//! rooms. Above the target for [`Policy::out_after`], the pool grows to as many nodes as bring
//! the mean back to the target (at least one more, at most `max`). Scale-in is slower and keeps
//! a margin, so that a pool does not swing: only when the load would stay below three quarters
//! of the target on one node fewer, for [`Policy::in_after`], is the least-loaded node drained;
//! its participants move to the others, and only once it is empty (or gone) does the pool
//! shrink by one.

use std::time::{Duration, Instant};

use super::NodeId;

/// What a pool's nodes report, one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoad {
    /// The node.
    pub id: NodeId,
    /// Participants it hosts.
    pub participants: u32,
    /// Participants it takes.
    pub max_participants: u32,
    /// CPU it uses, in millicores.
    pub cpu_millicores: u32,
    /// A draining node takes no new rooms and does not count towards the pool's load.
    pub draining: bool,
}

impl NodeLoad {
    /// The share of the node in use, in percent.
    pub fn percent(&self, cpu_request_millicores: Option<u32>) -> u32 {
        let participants = share(self.participants, self.max_participants);
        let cpu = cpu_request_millicores.map_or(0, |request| share(self.cpu_millicores, request));
        participants.max(cpu)
    }
}

fn share(used: u32, of: u32) -> u32 {
    if of == 0 {
        return 0;
    }
    ((u64::from(used) * 100) / u64::from(of)).min(10_000) as u32
}

/// A pool's bounds and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Never fewer nodes.
    pub min: i32,
    /// Never more nodes.
    pub max: i32,
    /// The mean load the pool aims for, in percent.
    pub target_percent: u32,
    /// The CPU a node's pod asks for, if it does.
    pub cpu_request_millicores: Option<u32>,
    /// How long the load must stay above the target before the pool grows.
    pub out_after: Duration,
    /// How long the load must stay low before a node is drained.
    pub in_after: Duration,
}

/// What the autoscaler does about a pool now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing, for now.
    Hold,
    /// Run `to` nodes.
    Out {
        /// How many.
        to: i32,
        /// Why, for the pool's status and events.
        why: String,
    },
    /// Drain `node` (its participants move to the others) before the pool shrinks.
    Drain {
        /// The least-loaded node.
        node: NodeId,
        /// Why.
        why: String,
    },
    /// Run `to` nodes: the drained node is empty or gone.
    In {
        /// How many.
        to: i32,
        /// Why.
        why: String,
    },
}

/// Since when the load has been high or low; kept by the loop between decisions.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    above_since: Option<Instant>,
    below_since: Option<Instant>,
}

/// Whether the pool waits for its draining node `draining` to appear among `nodes` before it
/// may count as gone: a control-plane replica that just started (`replica_is_new`) hears of its
/// nodes as they dial it again, and a draining node it has not heard of yet may still carry
/// participants whom scaling in would cut off.
pub fn awaits_draining_node(
    draining: Option<&NodeId>,
    nodes: &[NodeLoad],
    replica_is_new: bool,
) -> bool {
    replica_is_new && draining.is_some_and(|node| nodes.iter().all(|n| &n.id != node))
}

/// What to do about a pool that should run `replicas` nodes, whose nodes report `nodes`, whose
/// node `draining` (if any) the autoscaler drains to scale in, and of whose nodes `unplaced`
/// found no room in the cluster (their pods wait for the scheduler).
pub fn decide(
    policy: &Policy,
    replicas: i32,
    nodes: &[NodeLoad],
    draining: Option<&NodeId>,
    unplaced: i32,
    memory: &mut Memory,
    now: Instant,
) -> Decision {
    if replicas < policy.min {
        *memory = Memory::default();
        return Decision::Out {
            to: policy.min,
            why: format!("the pool runs fewer than its minimum of {}", policy.min),
        };
    }
    if let Some(node) = draining {
        *memory = Memory::default();
        let left = nodes
            .iter()
            .find(|n| &n.id == node)
            .map_or(0, |n| n.participants);
        return if left == 0 {
            Decision::In {
                to: (replicas - 1).max(policy.min),
                why: format!("node {node} is drained"),
            }
        } else {
            Decision::Hold
        };
    }
    let active: Vec<&NodeLoad> = nodes.iter().filter(|n| !n.draining).collect();
    if active.is_empty() {
        *memory = Memory::default();
        return Decision::Hold;
    }
    let percents: Vec<u32> = active
        .iter()
        .map(|n| n.percent(policy.cpu_request_millicores))
        .collect();
    let total: u32 = percents.iter().sum();
    let count = active.len() as u32;
    let mean = total / count;
    let target = policy.target_percent.max(1);
    if unplaced > 0 {
        *memory = Memory::default();
        // While the load needs them, their pods wait and ask the cluster for room (a cluster
        // autoscaler adds a Kubernetes node for them); when it does not, they go. The
        // Deployment removes pods that wait for the scheduler first, so no call moves.
        let to = (replicas - unplaced).max(policy.min);
        if mean > target || to >= replicas {
            return Decision::Hold;
        }
        return Decision::In {
            to,
            why: format!(
                "{unplaced} media node(s) found no room in the cluster, and the mean load of \
                 {mean} % (target {target} %) does not need them"
            ),
        };
    }
    if (active.len() as i32) < replicas {
        // Nodes that are starting are not judged by the ones that run.
        *memory = Memory::default();
        return Decision::Hold;
    }
    if mean > target {
        memory.below_since = None;
        let since = *memory.above_since.get_or_insert(now);
        if replicas >= policy.max || now.duration_since(since) < policy.out_after {
            return Decision::Hold;
        }
        *memory = Memory::default();
        let wanted = total.div_ceil(target) as i32;
        let to = wanted.max(replicas + 1).min(policy.max);
        return Decision::Out {
            to,
            why: format!(
                "mean load {mean} % above the target of {target} % for {} s",
                policy.out_after.as_secs()
            ),
        };
    }
    memory.above_since = None;
    let fewer = count - 1;
    if replicas <= policy.min || fewer == 0 || total / fewer >= target * 3 / 4 {
        memory.below_since = None;
        return Decision::Hold;
    }
    let since = *memory.below_since.get_or_insert(now);
    if now.duration_since(since) < policy.in_after {
        return Decision::Hold;
    }
    *memory = Memory::default();
    let least = active
        .iter()
        .zip(&percents)
        .min_by_key(|(node, percent)| (**percent, node.participants))
        .map(|(node, _)| node.id.clone())
        .expect("at least one node");
    Decision::Drain {
        node: least,
        why: format!(
            "mean load {mean} %: {fewer} nodes would carry it at {} % (target {target} %) for \
             {} s",
            total / fewer,
            policy.in_after.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, participants: u32) -> NodeLoad {
        NodeLoad {
            id: NodeId(id.to_owned()),
            participants,
            max_participants: 100,
            cpu_millicores: 0,
            draining: false,
        }
    }

    fn policy() -> Policy {
        Policy {
            min: 1,
            max: 4,
            target_percent: 70,
            cpu_request_millicores: Some(1000),
            out_after: Duration::from_secs(30),
            in_after: Duration::from_secs(120),
        }
    }

    #[test]
    fn a_pool_above_its_target_for_a_while_grows_to_what_brings_it_back() {
        let start = Instant::now();
        let mut memory = Memory::default();
        let busy = [node("a", 95), node("b", 85)];
        let at = |s| start + Duration::from_secs(s);
        assert_eq!(
            decide(&policy(), 2, &busy, None, 0, &mut memory, at(0)),
            Decision::Hold
        );
        assert_eq!(
            decide(&policy(), 2, &busy, None, 0, &mut memory, at(20)),
            Decision::Hold
        );
        let Decision::Out { to, why } = decide(&policy(), 2, &busy, None, 0, &mut memory, at(31))
        else {
            panic!("scales out");
        };
        // 180 % of load at 70 % each: three nodes.
        assert_eq!(to, 3);
        assert!(why.contains("90 % above the target of 70 %"), "{why}");
        // A dip below the target starts the wait again.
        let mut memory = Memory::default();
        decide(&policy(), 2, &busy, None, 0, &mut memory, at(0));
        decide(
            &policy(),
            2,
            &[node("a", 50), node("b", 50)],
            None,
            0,
            &mut memory,
            at(20),
        );
        assert_eq!(
            decide(&policy(), 2, &busy, None, 0, &mut memory, at(40)),
            Decision::Hold
        );
        // Never beyond max; CPU counts as much as participants.
        let mut hot = node("a", 10);
        hot.cpu_millicores = 990;
        let four = vec![hot.clone(); 4];
        let mut memory = Memory::default();
        decide(&policy(), 4, &four, None, 0, &mut memory, at(0));
        assert_eq!(
            decide(&policy(), 4, &four, None, 0, &mut memory, at(60)),
            Decision::Hold
        );
        let mut memory = Memory::default();
        decide(&policy(), 1, &[hot.clone()], None, 0, &mut memory, at(0));
        assert!(matches!(
            decide(&policy(), 1, &[hot], None, 0, &mut memory, at(60)),
            Decision::Out { to: 2, .. }
        ));
    }

    #[test]
    fn a_quiet_pool_drains_its_least_loaded_node_and_then_shrinks() {
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let quiet = [node("a", 20), node("b", 5), node("c", 30)];
        let mut memory = Memory::default();
        assert_eq!(
            decide(&policy(), 3, &quiet, None, 0, &mut memory, at(0)),
            Decision::Hold
        );
        assert_eq!(
            decide(&policy(), 3, &quiet, None, 0, &mut memory, at(100)),
            Decision::Hold
        );
        let Decision::Drain { node: drained, .. } =
            decide(&policy(), 3, &quiet, None, 0, &mut memory, at(121))
        else {
            panic!("drains a node");
        };
        assert_eq!(drained.0.as_str(), "b");
        // While it still has participants, the pool keeps its size.
        let mut moving = quiet.clone();
        moving[1].draining = true;
        let b = NodeId("b".to_owned());
        assert_eq!(
            decide(&policy(), 3, &moving, Some(&b), 0, &mut memory, at(125)),
            Decision::Hold
        );
        moving[1].participants = 0;
        assert!(matches!(
            decide(&policy(), 3, &moving, Some(&b), 0, &mut memory, at(130)),
            Decision::In { to: 2, .. }
        ));
        // A node that is gone is drained as well.
        assert!(matches!(
            decide(&policy(), 3, &quiet[..1], Some(&b), 0, &mut memory, at(130)),
            Decision::In { to: 2, .. }
        ));
        // Unless the replica just started: the node may not have dialled it yet.
        assert!(awaits_draining_node(Some(&b), &quiet[..1], true));
        assert!(!awaits_draining_node(Some(&b), &quiet[..1], false));
        assert!(!awaits_draining_node(Some(&b), &moving, true));
        assert!(!awaits_draining_node(None, &quiet[..1], true));
    }

    #[test]
    fn a_pool_near_its_target_or_at_its_minimum_keeps_its_nodes() {
        let start = Instant::now();
        let mut memory = Memory::default();
        // Two nodes at 40 %: one node would carry 80 %, above three quarters of 70.
        let steady = [node("a", 40), node("b", 40)];
        for s in [0, 200, 400] {
            let now = start + Duration::from_secs(s);
            assert_eq!(
                decide(&policy(), 2, &steady, None, 0, &mut memory, now),
                Decision::Hold
            );
        }
        let idle = [node("a", 0)];
        assert_eq!(
            decide(&policy(), 1, &idle, None, 0, &mut memory, start),
            Decision::Hold
        );
        // Below the minimum, at once; nodes still starting are waited for.
        assert!(matches!(
            decide(&policy(), 0, &[], None, 0, &mut memory, start),
            Decision::Out { to: 1, .. }
        ));
        assert_eq!(
            decide(&policy(), 3, &steady, None, 0, &mut memory, start),
            Decision::Hold
        );
    }

    #[test]
    fn nodes_without_room_in_the_cluster_wait_while_the_load_needs_them_and_go_when_it_does_not() {
        let start = Instant::now();
        let mut memory = Memory::default();
        // Scaled out to three, one found no room: the two that run are still busy.
        let busy = [node("a", 90), node("b", 80)];
        assert_eq!(
            decide(&policy(), 3, &busy, None, 1, &mut memory, start),
            Decision::Hold
        );
        // Later, not even above the target for an hour grows the pool further.
        let later = start + Duration::from_secs(3600);
        assert_eq!(
            decide(&policy(), 3, &busy, None, 1, &mut memory, later),
            Decision::Hold
        );
        // The load falls to the target: the waiting node goes at once, nobody drains.
        let Decision::In { to, why } = decide(
            &policy(),
            3,
            &[node("a", 70), node("b", 60)],
            None,
            1,
            &mut memory,
            later,
        ) else {
            panic!("gives the waiting node back");
        };
        assert_eq!(to, 2);
        assert!(why.contains("1 media node(s) found no room"), "{why}");
        // Never below the minimum: a pool whose minimum finds no room keeps asking for it.
        let mut small = policy();
        small.min = 3;
        assert_eq!(
            decide(&small, 3, &[node("a", 0)], None, 2, &mut memory, later),
            Decision::Hold
        );
    }
}

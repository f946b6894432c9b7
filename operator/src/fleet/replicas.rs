//! The control-plane replicas that serve now, as media nodes learn of them.
//!
//! A node in the cluster finds every replica by the addresses of the operator's headless
//! Service. A node at a partner's site reaches them through one shared address (a load balancer)
//! that shows it one replica per connection: each replica tells the node its own id
//! (`Registered.replica`) and the ids of all ([`v1::Replicas`]), and the node dials the shared
//! address again until it has a stream to each. Where the ids come from is the caller's business
//! (in a cluster, each replica's own Lease: `crate::replicas`); outside a cluster there is one.

use tokio::sync::watch;
use treffpunkt_proto::v1;

/// This replica's id and the ids of all replicas that serve now (this one among them).
#[derive(Debug)]
pub struct Replicas {
    id: String,
    all: watch::Sender<Vec<String>>,
}

impl Replicas {
    /// The set of one replica, `id`, until [`Replicas::set`] says otherwise.
    pub fn new(id: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            all: watch::channel(vec![id.clone()]).0,
            id,
        }
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The replicas that serve now, sorted.
    pub fn all(&self) -> Vec<String> {
        self.all.borrow().clone()
    }

    /// Sets the replicas that serve now; this one always does. Watchers hear of it only when the
    /// set changed.
    pub fn set(&self, mut ids: Vec<String>) {
        ids.push(self.id.clone());
        ids.sort();
        ids.dedup();
        self.all.send_if_modified(|all| {
            let changed = *all != ids;
            *all = ids;
            changed
        });
    }

    /// Follows the set, for one node's stream.
    pub fn subscribe(&self) -> watch::Receiver<Vec<String>> {
        self.all.subscribe()
    }

    /// The message that tells a node the set `ids`.
    pub fn message(ids: Vec<String>) -> v1::ControlMessage {
        v1::ControlMessage::new(v1::control_message::Kind::Replicas(v1::Replicas { ids }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_always_holds_this_replica_and_tells_only_changes() {
        let replicas = Replicas::new("b");
        let mut watcher = replicas.subscribe();
        assert_eq!(replicas.all(), ["b"]);
        replicas.set(vec!["c".into(), "a".into()]);
        assert!(watcher.has_changed().unwrap());
        assert_eq!(*watcher.borrow_and_update(), ["a", "b", "c"]);
        replicas.set(vec!["a".into(), "b".into(), "c".into()]);
        assert!(!watcher.has_changed().unwrap(), "the same set is no news");
        replicas.set(Vec::new());
        assert_eq!(replicas.all(), ["b"], "a replica always counts itself");
    }
}

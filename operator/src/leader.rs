//! Leader election with a Lease: of all control-plane replicas, only the one holding the Lease
//! runs the reconcilers; every replica serves the gateway and the `Attach` endpoint.
//!
//! When the leader dies, its Lease runs out and another replica takes it over within the lease
//! duration. A replica that loses the Lease stops its reconcilers and waits to win it again.

use std::future::Future;
use std::sync::Arc;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::reconcile::{self, Context};

/// How a replica competes for the Lease.
#[derive(Clone, Debug)]
pub struct Election {
    /// The Lease's namespace (the platform's).
    pub namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long the Lease lasts without renewal, in seconds.
    pub duration_seconds: u64,
}

/// Competes for the Lease and runs the reconcilers while holding it, until `shutdown`
/// completes. `leading` tells whether this replica leads right now.
pub async fn run(
    client: Client,
    election: Election,
    ctx: Arc<Context>,
    leading: watch::Sender<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let grace = (election.duration_seconds / 3).max(1);
    let manager = loop {
        match LeaseManagerBuilder::new(client.clone(), &election.lease_name)
            .with_namespace(&election.namespace)
            .with_identity(&election.identity)
            .with_duration(election.duration_seconds)
            .with_grace(grace)
            .build()
            .await
        {
            Ok(manager) => break manager,
            Err(error) => {
                warn!(%error, "cannot set up leader election; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    };
    let (mut is_leader, lease_task) = manager.watch().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    loop {
        // Wait to lead (or to stop).
        let mut stop = stop_rx.clone();
        tokio::select! {
            result = is_leader.wait_for(|leader| *leader) => if result.is_err() { break },
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        info!(identity = %election.identity, "leading: starting the reconcilers");
        let _ = leading.send(true);
        let mut lost = is_leader.clone();
        let mut stop = stop_rx.clone();
        reconcile::run(ctx.clone(), async move {
            tokio::select! {
                _ = lost.wait_for(|leader| !*leader) => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        })
        .await;
        let _ = leading.send(false);
        if *stop_rx.borrow() {
            break;
        }
        info!(identity = %election.identity, "lost the lease: reconcilers stopped");
    }
    // Dropping the receiver releases the Lease, so another replica need not wait it out.
    drop(is_leader);
    let _ = lease_task.await;
}

//! Which control-plane replicas serve now, in a cluster: each replica renews a Lease of its own
//! in the platform namespace (`<lease name>-<identity>`, labelled with the leader election's
//! Lease name), and the replicas are those whose Lease is fresh. The set goes to the fleet
//! ([`crate::fleet::Replicas`]), which tells it to the media nodes.
//!
//! A replica's Lease is removed when it stops; one left behind by a replica that died is removed
//! by the others once it has been expired for [`FORGOTTEN_AFTER`].

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use tracing::{debug, warn};

use crate::admin::Readiness;
use crate::fleet::Fleet;

/// The label that names the group (the leader election's Lease) a replica's Lease belongs to.
pub const REPLICA_OF: &str = "treffpunkt.io/replica-of";
/// How often a replica renews its Lease and looks at the others'.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long a replica's Lease lasts without renewal.
const LEASE_SECONDS: i32 = 15;
/// How long an expired Lease stays before another replica removes it.
pub const FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

/// One replica's place in its group.
#[derive(Clone, Debug)]
pub struct Membership {
    /// The platform namespace.
    pub namespace: String,
    /// The leader election's Lease name: the group.
    pub group: String,
    /// This replica's identity.
    pub identity: String,
}

impl Membership {
    fn lease_name(&self) -> String {
        format!("{}-{}", self.group, self.identity)
    }
}

/// Renews this replica's Lease and keeps `fleet`'s set of replicas up to date, until aborted.
pub async fn heartbeat(
    client: Client,
    membership: Membership,
    fleet: Arc<Fleet>,
    readiness: Readiness,
) {
    let leases = Api::<Lease>::namespaced(client, &membership.namespace);
    loop {
        match beat(&leases, &membership).await {
            Ok(alive) => {
                readiness.reached_the_api_server();
                fleet.replicas().set(alive);
            }
            Err(error) => warn!(%error, "cannot renew this replica's Lease; trying again"),
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// Removes this replica's Lease (it stops).
pub async fn leave(client: Client, membership: &Membership) {
    let leases = Api::<Lease>::namespaced(client, &membership.namespace);
    if let Err(error) = leases
        .delete(&membership.lease_name(), &DeleteParams::default())
        .await
    {
        debug!(%error, "could not remove this replica's Lease");
    }
}

/// Renews the Lease; returns the identities of the replicas whose Lease is fresh.
async fn beat(leases: &Api<Lease>, membership: &Membership) -> kube::Result<Vec<String>> {
    let now = Timestamp::now();
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(membership.lease_name()),
            labels: Some([(REPLICA_OF.to_owned(), membership.group.clone())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(membership.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    };
    let params = PatchParams::apply("treffpunkt-replica").force();
    leases
        .patch(&membership.lease_name(), &params, &Patch::Apply(&lease))
        .await?;
    let selector = format!("{REPLICA_OF}={}", membership.group);
    let mut alive = Vec::new();
    for lease in leases
        .list(&ListParams::default().labels(&selector))
        .await?
    {
        let Some(spec) = lease.spec else { continue };
        let (Some(identity), Some(MicroTime(renewed))) = (spec.holder_identity, spec.renew_time)
        else {
            continue;
        };
        let lasts = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
        let expired_for = now.as_second() - renewed.as_second() - lasts;
        if expired_for <= 0 {
            alive.push(identity);
        } else if expired_for > FORGOTTEN_AFTER.as_secs() as i64
            && let Some(name) = lease.metadata.name
        {
            let _ = leases.delete(&name, &DeleteParams::default()).await;
        }
    }
    Ok(alive)
}

//! The reconcilers: `Tenant`, `Room` and `MediaPool` onto namespaces, RBAC, quotas, network
//! policies, Deployments and statuses.
//!
//! Each follows the same shape: `reconcile` is wrapped in kube's `finalizer()`, so that
//! whatever a resource made is cleaned up before it goes; what it makes is created once with an
//! owner reference and then kept by server-side apply under one field manager, so that a second
//! pass over an unchanged resource writes nothing; an object of the same name that it did not
//! make is never adopted, changed or deleted (see [`ownership`]); its status is applied the
//! same way; failures are counted by reason and retried with backoff; transitions are recorded
//! as Kubernetes events.
//!
//! Only the replica that holds the Lease runs them (see [`crate::leader`]); every replica
//! counts what waits for them ([`backlog`]).

pub mod backlog;
mod credentials;
pub use credentials::PARTNER_SECRET;
pub mod ownership;
mod pool;
pub use pool::{POOL_LABEL, desired_replicas, node_ports, selector as pod_labels};
mod room;
mod tenant;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer;
use tracing::{debug, warn};

use crate::fleet::Fleet;
use crate::fleet::tls::Authority;
use crate::metrics::Metrics;
use crate::watches::Watches;

/// The field manager the reconcilers write under.
pub const MANAGER: &str = "treffpunkt-operator";
/// The label every object the operator makes carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", MANAGER);
/// The label that names an object's tenant.
pub const TENANT_LABEL: &str = "treffpunkt.io/tenant";

/// How the reconcilers are configured.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The namespace of the platform itself (MediaPools, the grant key, the Lease).
    pub platform_namespace: String,
    /// The address people open, e.g. `https://treffpunkt.example.org`; room join URLs start
    /// with it.
    pub public_url: String,
    /// How long an ad-hoc room may stay empty before it is removed.
    pub adhoc_room_ttl: Duration,
    /// The gRPC address media nodes dial, e.g. `http://treffpunkt-attach.treffpunkt:7001`.
    pub attach_address: String,
    /// The Secret (in the platform namespace) with the key grants are signed with.
    pub grant_key_secret: String,
    /// How the leader rotates the keys in that Secret; never when `None`.
    pub key_rotation: Option<crate::keys::Rotation>,
    /// How the operator may reach the Secrets of the tenant namespaces it manages; `None` when
    /// its own rights already cover them (it then binds nothing).
    pub tenant_secrets: Option<TenantSecrets>,
    /// How long the autoscaler waits before it grows or shrinks a pool.
    pub autoscaling: crate::autoscaler::Timing,
    /// Whether the media nodes log one JSON object per line (as the control plane does with
    /// `TREFFPUNKT_LOG_FORMAT=json`).
    pub log_json: bool,
    /// The log filter the media nodes get (`RUST_LOG`): the control plane's own, when it has
    /// one, so that `operator.logLevel` reaches them too.
    pub log_filter: Option<String>,
}

/// The operator holds no right on Secrets outside the platform namespace: in each tenant
/// namespace it manages, it binds this ClusterRole (exactly the rights on Secrets it uses
/// there) to its own ServiceAccount, with the RoleBinding
/// [`SECRETS_BINDING`].
#[derive(Clone, Debug)]
pub struct TenantSecrets {
    /// The ClusterRole to bind.
    pub cluster_role: String,
    /// The operator's ServiceAccount, in the platform namespace.
    pub service_account: String,
}

/// The RoleBinding that gives the operator its rights on the Secrets of a tenant namespace.
pub const SECRETS_BINDING: &str = "treffpunkt-operator-secrets";

/// What every reconciliation can reach.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The media nodes attached to this replica.
    pub fleet: Arc<Fleet>,
    /// The replica's watches of Tenants, Rooms and MediaPools, shared with its gateway.
    pub watches: Arc<Watches>,
    /// Where events go.
    pub recorder: Recorder,
    /// Counters and durations.
    pub metrics: Metrics,
    /// Configuration.
    pub settings: Settings,
    /// The Attach port's certificate authority, when the port runs mutual TLS: the pools'
    /// nodes get certificates of it.
    pub authority: Option<Arc<Authority>>,
    /// Failures in a row, per object, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context for reconcilers on `client`, with the replica's fleet and watches.
    pub fn new(
        client: Client,
        (fleet, watches): (Arc<Fleet>, Arc<Watches>),
        metrics: Metrics,
        settings: Settings,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            fleet,
            watches,
            metrics,
            settings,
            authority: None,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // Only counters are kept under the lock; a poisoned one is still consistent.
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The same, issuing the pools' nodes certificates of `authority`.
    pub fn with_authority(mut self, authority: Arc<Authority>) -> Self {
        self.authority = Some(authority);
        self
    }

    /// Forgets the failures of an object that reconciled.
    pub fn succeeded(&self, controller: &str, object: &impl kube::ResourceExt) {
        self.failures().remove(&failure_key(controller, object));
    }

    /// Publishes an event about `object`; a failure to do so is logged, never fatal.
    pub async fn event(
        &self,
        object: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, object).await {
            debug!(%error, "could not publish an event");
        }
    }
}

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing a finalizer, or the work it guards, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// Cleanup waits for something to go away.
    #[error("waiting for {0} to be deleted")]
    Deleting(String),
    /// A right just granted has not reached the API server's authorizer yet.
    #[error("waiting for {0}")]
    Waiting(String),
    /// The object lacks something it must have.
    #[error("the object has no {0}")]
    Incomplete(&'static str),
    /// A certificate could not be issued.
    #[error("issuing a certificate: {0}")]
    Certificate(#[from] crate::fleet::tls::TlsError),
}

impl Error {
    /// The failure itself, out of the finalizer's wrapping.
    fn cause(&self) -> &Self {
        match self {
            Self::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => {
                    error.cause()
                }
                _ => self,
            },
            _ => self,
        }
    }

    /// A short, stable reason for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(status)) if status.code == 403 => "forbidden",
            Self::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Self::Kube(_) => "kube",
            Self::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => {
                    error.reason()
                }
                _ => "finalizer",
            },
            Self::Deleting(_) => "deleting",
            Self::Waiting(_) => "waiting",
            Self::Incomplete(_) => "incomplete",
            Self::Certificate(_) => "certificate",
        }
    }
}

/// The result of a reconciliation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn failure_key(controller: &str, object: &impl kube::ResourceExt) -> String {
    format!(
        "{controller}/{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// The longest wait before retrying a failed reconciliation.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Retries a failed reconciliation with a backoff that doubles with every failure in a row
/// (up to five minutes), and counts the failure.
fn error_policy(
    controller: &'static str,
    object: &impl kube::ResourceExt,
    error: &Error,
    ctx: &Context,
) -> kube::runtime::controller::Action {
    ctx.metrics.failure(controller, error.reason());
    match error.cause() {
        Error::Deleting(_) | Error::Waiting(_) => debug!(controller, %error, "waiting"),
        _ => warn!(controller, %error, "reconciliation failed"),
    }
    let in_a_row = {
        let mut failures = ctx.failures();
        let count = failures.entry(failure_key(controller, object)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let first = match error.cause() {
        Error::Deleting(_) => Duration::from_secs(1),
        Error::Waiting(_) => Duration::from_millis(200),
        Error::Kube(kube::Error::Api(status)) if status.code == 409 => Duration::from_millis(200),
        _ => Duration::from_secs(2),
    };
    let delay = first
        .saturating_mul(1 << in_a_row.saturating_sub(1).min(10))
        .min(MAX_BACKOFF);
    kube::runtime::controller::Action::requeue(delay)
}

/// Runs every reconciler until `shutdown` completes.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let signal = move || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    };
    let tenants = tenant::run(ctx.clone(), signal());
    let rooms = room::run(ctx.clone(), signal());
    let pools = pool::run(ctx.clone(), signal());
    let settings = &ctx.settings;
    let rotation = settings.key_rotation.map(|rotation| {
        tokio::spawn(crate::keys::rotate(
            ctx.client.clone(),
            settings.platform_namespace.clone(),
            settings.grant_key_secret.clone(),
            rotation,
        ))
    });
    let autoscaler = tokio::spawn(crate::autoscaler::run(ctx.clone(), settings.autoscaling));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tokio::join!(tenants, rooms, pools);
    // The keys are rotated and the pools scaled by the leader alone.
    if let Some(rotation) = rotation {
        rotation.abort();
    }
    autoscaler.abort();
}

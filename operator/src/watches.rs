//! One watch per kind for the whole replica: Tenants, Rooms and MediaPools are each watched
//! once, into a cache that the gateway reads and a stream of changes that the reconcilers and
//! the autoscaler follow. (Each reconciler watching for itself, as kube's `Controller::new`
//! does, would hold three watches of each kind on the API server per replica.)
//!
//! A follower that falls behind by more than the channel holds is given every object again
//! rather than losing changes. A reconciler that starts (when its replica wins the Lease) is
//! first given every object, as a watch of its own would list them.

use std::sync::Arc;

use futures::{Stream, StreamExt, stream};
use kube::api::Api;
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tracing::warn;

use crate::crd::{MediaPool, Room, Tenant};

/// Changes a follower may fall behind by before it is given everything again.
const BACKLOG: usize = 4096;

/// One kind, watched once.
pub struct Watched<K: Lookup<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<Arc<K>>,
}

impl<K: Lookup<DynamicType = ()> + Clone + Send + Sync + 'static> Watched<K> {
    /// Watches `api` into a cache; returns it and the task that keeps it current.
    fn start(api: Api<K>) -> (Self, JoinHandle<()>)
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(BACKLOG);
        let sender = changes.clone();
        let touched = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        let task = tokio::spawn(async move {
            futures::pin_mut!(touched);
            while let Some(event) = touched.next().await {
                match event {
                    // Nobody following is fine: the cache is what counts then.
                    Ok(object) => drop(sender.send(Arc::new(object))),
                    Err(error) => warn!(%error, "watch failed; retrying"),
                }
            }
        });
        (Self { store, changes }, task)
    }

    /// The cache.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every change from now on (every object again after falling behind).
    pub fn changes(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let store = self.store.clone();
        BroadcastStream::new(self.changes.subscribe()).flat_map(move |change| {
            stream::iter(match change {
                Ok(object) => vec![object],
                Err(BroadcastStreamRecvError::Lagged(_)) => store.state(),
            })
        })
    }

    /// Every object now, then every change.
    pub fn everything_then_changes(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        // Subscribed before the snapshot, so that nothing falls between the two.
        let changes = self.changes();
        stream::iter(self.store.state()).chain(changes)
    }

    /// Waits until the cache has had its first full list.
    async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.store.wait_until_ready().await
    }
}

/// The replica's watches.
pub struct Watches {
    /// Every Tenant.
    pub tenants: Watched<Tenant>,
    /// Every Room, in every namespace.
    pub rooms: Watched<Room>,
    /// Every MediaPool, in every namespace.
    pub pools: Watched<MediaPool>,
}

impl Watches {
    /// Starts the watches on `client` and waits until each cache is filled. The returned tasks
    /// keep them current.
    pub async fn start(
        client: &kube::Client,
    ) -> Result<(Self, Vec<JoinHandle<()>>), reflector::store::WriterDropped> {
        let (tenants, tenant_task) = Watched::start(Api::all(client.clone()));
        let (rooms, room_task) = Watched::start(Api::all(client.clone()));
        let (pools, pool_task) = Watched::start(Api::all(client.clone()));
        let tasks = vec![tenant_task, room_task, pool_task];
        let watches = Self {
            tenants,
            rooms,
            pools,
        };
        watches.tenants.ready().await?;
        watches.rooms.ready().await?;
        watches.pools.ready().await?;
        Ok((watches, tasks))
    }
}

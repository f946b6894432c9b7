//! The in-memory store of standalone mode.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{Store, StoreError, TenantSecret};
use crate::domain::{NodeId, PoolAccess, Revision, Room, RoomKey, Tenant, TenantName};

/// Tenants and rooms in memory: nothing survives the process, which is what a meeting on one
/// machine wants.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tenants: BTreeMap<TenantName, Tenant>,
    rooms: BTreeMap<RoomKey, Room>,
    secrets: BTreeMap<(TenantName, String), BTreeMap<String, Vec<u8>>>,
    pools: Vec<PoolAccess>,
    next_revision: u64,
}

impl State {
    fn bump(&mut self) -> Revision {
        self.next_revision += 1;
        Revision(self.next_revision.to_string())
    }
}

impl MemoryStore {
    /// A store holding `tenants` and no rooms.
    pub fn with_tenants(tenants: impl IntoIterator<Item = Tenant>) -> Self {
        let store = Self::default();
        {
            let mut state = store.lock();
            for tenant in tenants {
                state.tenants.insert(tenant.name.clone(), tenant);
            }
        }
        store
    }

    /// A store holding `tenants` and `rooms`.
    pub fn seeded(
        tenants: impl IntoIterator<Item = Tenant>,
        rooms: impl IntoIterator<Item = Room>,
    ) -> Self {
        let store = Self::with_tenants(tenants);
        {
            let mut state = store.lock();
            for mut room in rooms {
                room.revision = state.bump();
                state.rooms.insert(room.key.clone(), room);
            }
        }
        store
    }

    /// The same store, with the media pools `pools` (standalone mode has none of its own: its
    /// nodes belong to no pool).
    pub fn with_pools(self, pools: impl IntoIterator<Item = PoolAccess>) -> Self {
        self.lock().pools.extend(pools);
        self
    }

    /// The same store, also holding `secrets`.
    pub fn with_secrets(self, secrets: impl IntoIterator<Item = TenantSecret>) -> Self {
        {
            let mut state = self.lock();
            for secret in secrets {
                state
                    .secrets
                    .insert((secret.tenant, secret.name), secret.data);
            }
        }
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock is only held for map operations that cannot panic half-way, so a poisoned
        // lock still guards consistent data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    async fn tenant(&self, name: &TenantName) -> Result<Option<Tenant>, StoreError> {
        Ok(self.lock().tenants.get(name).cloned())
    }

    async fn room(&self, key: &RoomKey) -> Result<Option<Room>, StoreError> {
        Ok(self.lock().rooms.get(key).cloned())
    }

    async fn create_room(&self, mut room: Room) -> Result<Room, StoreError> {
        let mut state = self.lock();
        if state.rooms.contains_key(&room.key) {
            return Err(StoreError::AlreadyExists(room.key));
        }
        let limit = state
            .tenants
            .get(&room.key.tenant)
            .map_or(0, |tenant| tenant.limits.max_rooms);
        let existing = state
            .rooms
            .keys()
            .filter(|key| key.tenant == room.key.tenant)
            .count();
        if existing >= limit as usize {
            return Err(StoreError::RoomLimit(room.key.tenant));
        }
        room.revision = state.bump();
        state.rooms.insert(room.key.clone(), room.clone());
        Ok(room)
    }

    async fn place_room(
        &self,
        key: &RoomKey,
        revision: &Revision,
        nodes: Vec<NodeId>,
    ) -> Result<Room, StoreError> {
        let mut state = self.lock();
        let new_revision = state.bump();
        let room = state
            .rooms
            .get_mut(key)
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        if &room.revision != revision {
            return Err(StoreError::Conflict(key.clone()));
        }
        room.nodes = nodes;
        room.revision = new_revision;
        Ok(room.clone())
    }

    async fn delete_room(&self, key: &RoomKey, revision: &Revision) -> Result<(), StoreError> {
        let mut state = self.lock();
        match state.rooms.get(key) {
            None => Err(StoreError::NotFound(key.clone())),
            Some(room) if &room.revision != revision => Err(StoreError::Conflict(key.clone())),
            Some(_) => {
                state.rooms.remove(key);
                Ok(())
            }
        }
    }

    async fn rooms(&self) -> Result<Vec<Room>, StoreError> {
        Ok(self.lock().rooms.values().cloned().collect())
    }

    async fn count_rooms(&self, tenant: &TenantName) -> Result<u32, StoreError> {
        let state = self.lock();
        let count = state
            .rooms
            .keys()
            .filter(|key| &key.tenant == tenant)
            .count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn rooms_per_node(&self) -> Result<HashMap<NodeId, u32>, StoreError> {
        let mut counts: HashMap<NodeId, u32> = HashMap::new();
        for node in self
            .lock()
            .rooms
            .values()
            .flat_map(|room| room.nodes.iter())
        {
            *counts.entry(node.clone()).or_default() += 1;
        }
        Ok(counts)
    }

    /// Standalone mode has no pools: its nodes serve every tenant.
    async fn pools(&self) -> Result<Vec<PoolAccess>, StoreError> {
        Ok(self.lock().pools.clone())
    }

    async fn secret(
        &self,
        tenant: &TenantName,
        name: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let state = self.lock();
        Ok(state
            .secrets
            .get(&(tenant.clone(), name.to_owned()))
            .and_then(|data| data.get(key))
            .cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RoomName;

    fn key(name: &str) -> RoomKey {
        RoomKey {
            tenant: TenantName::new("public").unwrap(),
            name: RoomName::new(name).unwrap(),
        }
    }

    #[tokio::test]
    async fn placement_is_compare_and_set() {
        let store = MemoryStore::with_tenants([Tenant::public()]);
        let room = store.create_room(Room::adhoc(key("chor"))).await.unwrap();
        let first = store
            .place_room(&room.key, &room.revision, vec![NodeId("a".into())])
            .await
            .unwrap();
        let racing = store
            .place_room(&room.key, &room.revision, vec![NodeId("b".into())])
            .await;
        assert!(matches!(racing, Err(StoreError::Conflict(_))));
        let stored = store.room(&room.key).await.unwrap().unwrap();
        assert_eq!(stored.nodes, vec![NodeId("a".into())]);
        assert_eq!(stored.revision, first.revision);
    }

    #[tokio::test]
    async fn rooms_are_counted_per_node() {
        let store = MemoryStore::with_tenants([Tenant::public()]);
        for (name, node) in [
            ("a", Some("n1")),
            ("b", Some("n1")),
            ("c", Some("n2")),
            ("d", None),
        ] {
            let room = store.create_room(Room::adhoc(key(name))).await.unwrap();
            if let Some(node) = node {
                store
                    .place_room(&room.key, &room.revision, vec![NodeId(node.into())])
                    .await
                    .unwrap();
            }
        }
        let counts = store.rooms_per_node().await.unwrap();
        assert_eq!(counts.len(), 2, "a room on no node counts nowhere");
        assert_eq!(counts[&NodeId("n1".into())], 2);
        assert_eq!(counts[&NodeId("n2".into())], 1);
    }

    #[tokio::test]
    async fn the_tenant_room_limit_holds() {
        let mut tenant = Tenant::public();
        tenant.limits.max_rooms = 1;
        let store = MemoryStore::with_tenants([tenant]);
        store.create_room(Room::adhoc(key("a"))).await.unwrap();
        assert!(matches!(
            store.create_room(Room::adhoc(key("b"))).await,
            Err(StoreError::RoomLimit(_))
        ));
        assert!(matches!(
            store.create_room(Room::adhoc(key("a"))).await,
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(store.count_rooms(&key("a").tenant).await.unwrap(), 1);
        let elsewhere = TenantName::new("elsewhere").unwrap();
        assert_eq!(store.count_rooms(&elsewhere).await.unwrap(), 0);
    }
}

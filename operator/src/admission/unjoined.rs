//! New ad-hoc rooms that nobody is in a minute after they were created: they go.
//!
//! Admission checks everything that could refuse a join before it creates an ad-hoc room
//! (`Admission::join`), so a refusal creates nothing. What can still fail after the room exists
//! (its node goes away while it is placed, the session cannot be opened) would leave a room that
//! nobody is in; the join that created it removes it again at once. And a client may open a new
//! name, join, and vanish: its session ends when its media never connects, and the room stays
//! empty. Such rooms would hold their tenant's room slots for the ordinary grace of empty ad-hoc
//! rooms (minutes), and a burst of them would fill the tenant.
//!
//! So every ad-hoc room this replica creates is recorded here with the time it is due: its
//! creation plus [`Admission::unjoined_ttl`] (a minute unless configured). When it is due,
//! [`Admission::sweep_unjoined`] looks at it once: if someone is in it (through this replica, or
//! as the nodes report it, through another), it is forgotten here and the ordinary grace applies
//! once it empties (the standalone sweeper, or the Room reconciler in a cluster); if nobody is in
//! it, it is removed. A room that had people only in its first minute is removed too: a real
//! meeting that ended that soon loses nothing, since opening the name again creates the room
//! again, while a client that joins and leaves new names in a loop cannot hold rooms longer than
//! that. The removal is a compare-and-set on the room's revision, so a room that someone placed
//! in the meantime stays and is looked at again a moment later.
//!
//! The record is this replica's memory: a replica that restarts forgets the rooms it created,
//! and those fall to the ordinary grace.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Admission;
use crate::domain::{RoomKey, RoomLifetime};
use crate::store::{Store, StoreError};

/// How long an ad-hoc room that nobody joined may stay, unless configured otherwise.
pub const UNJOINED_ROOM_TTL: Duration = Duration::from_secs(60);
/// How soon a removal that failed (the store was busy, the room changed) is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The ad-hoc rooms this replica created in the last minute, with when each is due.
#[derive(Debug, Default)]
pub(super) struct UnjoinedRooms {
    due: Mutex<HashMap<RoomKey, Instant>>,
}

impl UnjoinedRooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomKey, Instant>> {
        // Single map operations under the lock: a poisoned lock still guards consistent data.
        self.due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a room created now, to be removed at `due` unless someone is in it then.
    pub(super) fn created(&self, room: &RoomKey, due: Instant) {
        self.lock().insert(room.clone(), due);
    }

    /// Forgets `room`: someone is in it, or it is gone.
    pub(super) fn forget(&self, room: &RoomKey) {
        self.lock().remove(room);
    }

    /// The rooms due at `now`.
    fn due_at(&self, now: Instant) -> Vec<RoomKey> {
        self.lock()
            .iter()
            .filter(|(_, due)| **due <= now)
            .map(|(room, _)| room.clone())
            .collect()
    }

    /// When the next room is due, if any is recorded.
    fn next_due(&self) -> Option<Instant> {
        self.lock().values().min().copied()
    }

    /// Looks at `room` again at `due`.
    fn postpone(&self, room: &RoomKey, due: Instant) {
        if let Some(at) = self.lock().get_mut(room) {
            *at = due;
        }
    }
}

/// What became of one room the sweeper looked at.
enum Outcome {
    /// Removed, or gone already.
    Gone,
    /// Someone is in it, or it is no ad-hoc room: it is not the sweeper's.
    Kept,
    /// It could not be removed now; try again.
    Retry,
}

impl<S: Store> Admission<S> {
    /// Removes the ad-hoc rooms created by this replica [`Self::unjoined_ttl`] ago or longer
    /// that nobody is in, as of `now`. Returns when the next room is due, if any.
    pub async fn sweep_unjoined(&self, now: Instant) -> Option<Instant> {
        for room in self.unjoined.due_at(now) {
            match self.remove_if_empty(&room).await {
                Outcome::Gone | Outcome::Kept => self.unjoined.forget(&room),
                Outcome::Retry => self.unjoined.postpone(&room, now + RETRY),
            }
        }
        self.unjoined.next_due()
    }

    /// Sweeps unjoined rooms for ever, each as soon as it is due.
    pub async fn run_unjoined_sweeper(&self) {
        loop {
            let now = Instant::now();
            // Nothing recorded: a room created from now on is due no sooner than a full TTL.
            let next = self
                .sweep_unjoined(now)
                .await
                .unwrap_or(now + self.unjoined_ttl);
            tokio::time::sleep_until(next.max(now + Duration::from_millis(10))).await;
        }
    }

    /// Removes a room that a failed join created, unless someone is in it by now (then its
    /// record stays, and the sweeper looks at it when it is due).
    pub(super) async fn remove_created(&self, room: &RoomKey) {
        if let Outcome::Gone = self.remove_if_empty(room).await {
            self.unjoined.forget(room);
        }
    }

    async fn remove_if_empty(&self, key: &RoomKey) -> Outcome {
        if self.fleet.presence(key) > 0 || self.fleet.room_participants(key) > 0 {
            return Outcome::Kept;
        }
        let room = match self.store.room(key).await {
            Ok(Some(room)) if room.lifetime == RoomLifetime::AdHoc => room,
            Ok(_) => return Outcome::Kept,
            Err(error) => {
                debug!(room = %key, %error, "could not read an unjoined room");
                return Outcome::Retry;
            }
        };
        match self.store.delete_room(key, &room.revision).await {
            Ok(()) => {
                info!(room = %key, "removed an ad-hoc room that nobody joined");
                Outcome::Gone
            }
            Err(StoreError::NotFound(_)) => Outcome::Gone,
            // Placed or changed in between, most likely by someone joining: look again.
            Err(StoreError::Conflict(_)) => Outcome::Retry,
            Err(error) => {
                warn!(room = %key, %error, "could not remove an unjoined room");
                Outcome::Retry
            }
        }
    }
}

//! What the gateway allows one client and everyone together, and the counters that hold it.
//!
//! The numbers are configured in [`Limits`] (flags and environment variables of both
//! `treffpunkt standalone` and `treffpunkt operator`, see [`super::cli`]); what enforces them:
//!
//! - [`Tally`]: open connections, in total and per client address, each held by a [`Ticket`]
//!   that gives its place back when it is dropped. The HTTP server keeps one for TCP
//!   connections; the gateway one for signalling WebSockets.
//! - [`JoinRate`]: joins per client address per minute, a token bucket per address; and
//!   [`WrongPasswords`], wrong passwords per client address and room per ten minutes, the same
//!   kind of [`Rate`].
//!
//! Both keep state only for addresses that are active: a tally forgets an address when its
//! last connection closes, and the join rate forgets an address once its bucket is full again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::address::{AddressKey, ClientAddressHeader, TrustedProxies};

/// The limits, with the defaults of a city's platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open TCP connections to one HTTP listener, WebSockets included. More are closed at once.
    pub max_connections: usize,
    /// Open TCP connections to one HTTP listener from one peer address (an IPv6 /64); trusted
    /// proxies count only in the total.
    pub max_connections_per_address: usize,
    /// Open signalling WebSockets, in total (`server-busy` beyond).
    pub max_websockets: usize,
    /// Open signalling WebSockets per client address (`too-many-connections` beyond).
    pub max_websockets_per_address: usize,
    /// Joins per client address per minute (`too-many-joins` beyond).
    pub joins_per_minute: u32,
    /// Wrong passwords per client address and room per ten minutes (`too-many-attempts`
    /// beyond).
    pub wrong_passwords: u32,
    /// How long a signalling WebSocket may stay open without joining (`join-timeout`).
    pub join_timeout: Duration,
    /// How long a client may take to send a request's headers, from the moment it connects
    /// or its previous response was sent: so also how long a keep-alive connection may wait
    /// for its next request.
    pub header_timeout: Duration,
    /// A connection on which no byte moves for this long is closed, until it is upgraded to a
    /// WebSocket.
    pub idle_timeout: Duration,
    /// Peers whose proxy header names the client.
    pub trusted_proxies: TrustedProxies,
    /// Which proxy header that is.
    pub client_address_header: ClientAddressHeader,
    /// How long a new ad-hoc room may stay with nobody in it.
    pub unjoined_room_ttl: Duration,
    /// How often a joined client gets a fresh resume ticket (each is valid for
    /// [`crate::admission::TICKET_LIFETIME`]).
    pub ticket_refresh: Duration,
}

/// The defaults: enough for a school or an office behind one address (a few dozen people)
/// and for a platform of several thousand participants per replica; a single client cannot
/// take more than a small share.
pub const DEFAULT_LIMITS: Limits = Limits {
    max_connections: 12_000,
    max_connections_per_address: 60,
    max_websockets: 10_000,
    max_websockets_per_address: 20,
    joins_per_minute: 30,
    wrong_passwords: 5,
    join_timeout: Duration::from_secs(30),
    header_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
    trusted_proxies: TrustedProxies(Vec::new()),
    client_address_header: ClientAddressHeader::XForwardedFor,
    unjoined_room_ttl: crate::admission::UNJOINED_ROOM_TTL,
    ticket_refresh: crate::admission::TICKET_REFRESH,
};

impl Default for Limits {
    fn default() -> Self {
        DEFAULT_LIMITS
    }
}

/// The stable codes with which the gateway refuses what exceeds a limit.
pub mod codes {
    /// Too many WebSockets from this client's address.
    pub const TOO_MANY_CONNECTIONS: &str = "too-many-connections";
    /// Too many WebSockets in total.
    pub const SERVER_BUSY: &str = "server-busy";
    /// Too many joins from this client's address in the last minute.
    pub const TOO_MANY_JOINS: &str = "too-many-joins";
    /// The socket stayed open without joining for too long.
    pub const JOIN_TIMEOUT: &str = "join-timeout";
    /// Too many wrong passwords for this room from this client's address.
    pub const TOO_MANY_ATTEMPTS: &str = "too-many-attempts";
}

/// Which cap a connection hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crowded {
    /// Its address has as many as it may.
    Address,
    /// Everyone together has as many as they may.
    Total,
}

/// Open connections, in total and per address.
#[derive(Debug)]
pub struct Tally {
    max_total: usize,
    max_per_address: usize,
    state: Mutex<TallyState>,
}

#[derive(Debug, Default)]
struct TallyState {
    total: usize,
    per_address: HashMap<AddressKey, usize>,
}

/// One place in a [`Tally`], given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    tally: Arc<Tally>,
    address: Option<AddressKey>,
}

impl Tally {
    /// A tally of at most `max_total` connections, `max_per_address` of them from one address.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, TallyState> {
        // Counters only: a poisoned lock still guards consistent data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for one more connection from `address` (counted only in the total when
    /// `None`), unless a cap is reached.
    pub fn enter(self: &Arc<Self>, address: Option<AddressKey>) -> Result<Ticket, Crowded> {
        let mut state = self.lock();
        if let Some(address) = address
            && state.per_address.get(&address).copied().unwrap_or(0) >= self.max_per_address
        {
            return Err(Crowded::Address);
        }
        if state.total >= self.max_total {
            return Err(Crowded::Total);
        }
        state.total += 1;
        if let Some(address) = address {
            *state.per_address.entry(address).or_default() += 1;
        }
        Ok(Ticket {
            tally: self.clone(),
            address,
        })
    }

    /// How many connections hold a place now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.tally.lock();
        state.total = state.total.saturating_sub(1);
        if let Some(address) = self.address
            && let Some(count) = state.per_address.get_mut(&address)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.per_address.remove(&address);
            }
        }
    }
}

/// Attempts per key within a period: a token bucket per key that holds a period's attempts and
/// refills at that rate, so a burst of a period's worth is allowed and then one every
/// `period / n`. Keys whose bucket is full again are forgotten.
#[derive(Debug)]
pub struct Rate<K> {
    per_period: u32,
    period: Duration,
    state: Mutex<RateState<K>>,
}

#[derive(Debug)]
struct RateState<K> {
    buckets: HashMap<K, Bucket>,
    pruned: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// How often buckets that have filled up again are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Joins per client address per minute.
pub type JoinRate = Rate<AddressKey>;

/// Wrong passwords per client address and room, per [`WRONG_PASSWORD_PERIOD`].
pub type WrongPasswords = Rate<(AddressKey, crate::domain::RoomKey)>;

/// The period of [`Limits::wrong_passwords`].
pub const WRONG_PASSWORD_PERIOD: Duration = Duration::from_secs(600);

impl JoinRate {
    /// `per_minute` joins per address per minute.
    pub fn new(per_minute: u32) -> Self {
        Self::per(per_minute, Duration::from_secs(60))
    }
}

impl<K: std::hash::Hash + Eq + Clone> Rate<K> {
    /// `per_period` attempts per key per `period`.
    pub fn per(per_period: u32, period: Duration) -> Self {
        Self {
            per_period,
            period,
            state: Mutex::new(RateState {
                buckets: HashMap::new(),
                pruned: None,
            }),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let capacity = f64::from(self.per_period);
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * capacity / self.period.as_secs_f64()).min(capacity)
    }

    /// The tokens `key` has at `now`, with buckets that filled up again forgotten now and then.
    fn tokens(&self, state: &mut RateState<K>, key: &K, now: Instant) -> f64 {
        let capacity = f64::from(self.per_period);
        if state
            .pruned
            .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY)
        {
            // A full bucket is the same as none.
            state
                .buckets
                .retain(|_, bucket| self.refilled(*bucket, now) < capacity);
            state.pruned = Some(now);
        }
        state
            .buckets
            .get(key)
            .map_or(capacity, |bucket| self.refilled(*bucket, now))
    }

    fn lock(&self) -> MutexGuard<'_, RateState<K>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `key` may make an attempt at `now`; an attempt that is allowed takes its token.
    pub fn allow(&self, key: K, now: Instant) -> bool {
        let mut state = self.lock();
        let tokens = self.tokens(&mut state, &key, now);
        let allowed = tokens >= 1.0;
        let tokens = if allowed { tokens - 1.0 } else { tokens };
        state.buckets.insert(key, Bucket { tokens, at: now });
        allowed
    }

    /// Whether `key` has an attempt left at `now`, taking nothing (the attempt is counted with
    /// [`Self::allow`] only if it fails).
    pub fn has_left(&self, key: &K, now: Instant) -> bool {
        let mut state = self.lock();
        self.tokens(&mut state, key, now) >= 1.0
    }

    /// How many keys have a bucket now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn address(last: u8) -> AddressKey {
        AddressKey::from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn a_tally_caps_each_address_and_the_total_and_gives_places_back() {
        let tally = Tally::new(3, 2);
        let a1 = tally.enter(Some(address(1))).unwrap();
        let _a2 = tally.enter(Some(address(1))).unwrap();
        assert_eq!(tally.enter(Some(address(1))).unwrap_err(), Crowded::Address);
        let _b = tally.enter(Some(address(2))).unwrap();
        assert_eq!(tally.enter(Some(address(3))).unwrap_err(), Crowded::Total);
        assert_eq!(tally.enter(None).unwrap_err(), Crowded::Total);
        drop(a1);
        assert_eq!(tally.open(), 2);
        let _a3 = tally
            .enter(Some(address(1)))
            .expect("a place was given back");
    }

    #[test]
    fn connections_without_an_address_count_only_in_the_total() {
        let tally = Tally::new(10, 1);
        let _proxied: Vec<Ticket> = (0..5).map(|_| tally.enter(None).unwrap()).collect();
        assert_eq!(tally.open(), 5);
        assert!(tally.enter(Some(address(1))).is_ok());
    }

    #[test]
    fn joins_are_allowed_a_minute_s_burst_then_at_the_steady_rate() {
        let rate = JoinRate::new(30);
        let start = Instant::now();
        let allowed = (0..100).filter(|_| rate.allow(address(1), start)).count();
        assert_eq!(allowed, 30, "a minute's worth at once");
        assert!(
            rate.allow(address(2), start),
            "other addresses are not affected"
        );
        assert!(!rate.allow(address(1), start + Duration::from_secs(1)));
        assert!(
            rate.allow(address(1), start + Duration::from_secs(2)),
            "one more every two seconds"
        );
        assert!(!rate.allow(address(1), start + Duration::from_secs(2)));
        assert!(!rate.allow(address(1), start + Duration::from_secs(3)));
        assert!(
            rate.allow(address(1), start + Duration::from_millis(4100)),
            "a refused attempt does not push the next join further out"
        );
    }

    #[test]
    fn wrong_passwords_are_counted_per_address_and_room_and_only_when_wrong() {
        let wrong = WrongPasswords::per(3, WRONG_PASSWORD_PERIOD);
        let room = |name: &str| crate::domain::RoomKey {
            tenant: crate::domain::TenantName::new("verein").unwrap(),
            name: crate::domain::RoomName::new(name).unwrap(),
        };
        let start = Instant::now();
        let key = (address(1), room("vorstand"));
        for _ in 0..3 {
            assert!(wrong.has_left(&key, start), "asking costs nothing");
            wrong.allow(key.clone(), start);
        }
        assert!(
            !wrong.has_left(&key, start),
            "three wrong ones, then no more"
        );
        assert!(wrong.has_left(&(address(2), room("vorstand")), start));
        assert!(wrong.has_left(&(address(1), room("kasse")), start));
        assert!(
            wrong.has_left(&key, start + Duration::from_secs(200)),
            "one more after a third of the period"
        );
    }

    #[test]
    fn addresses_whose_bucket_filled_up_again_are_forgotten() {
        let rate = JoinRate::new(30);
        let start = Instant::now();
        for last in 0..200 {
            rate.allow(address(last), start);
        }
        assert_eq!(rate.tracked(), 200);
        rate.allow(address(1), start + Duration::from_secs(61));
        assert_eq!(rate.tracked(), 1, "only the address that just joined");
    }
}

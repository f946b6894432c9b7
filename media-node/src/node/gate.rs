//! The media port's gate: what a datagram must show before the node spends real work on it.
//!
//! Anyone can send datagrams to the node's one UDP port, and some will: garbage from unknown
//! sources, or garbage with a participant's own address as its source. Decrypting SRTP, running
//! DTLS or checking a STUN message's integrity costs microseconds each, and a malformed datagram
//! that reaches `rtc` can make it log or change state. So each datagram is first looked at for
//! what costs nanoseconds, in this order:
//!
//! 1. its first byte says which protocol it is (RFC 7983): STUN, DTLS, or RTP/RTCP; anything
//!    else is dropped;
//! 2. a STUN request must name a session's ICE username (see [`super::demux`]); everything else
//!    (answers to the node's own checks included) must come from an address a session's client
//!    has shown with such a request;
//! 3. its header must be well formed for its protocol (lengths, version, packet type);
//! 4. RTP and RTCP from an SSRC whose packets authenticated before pass; others (a new simulcast
//!    layer, or forged packets), DTLS once the connection is up, and STUN are counted against
//!    budgets per session, so that a flood spoofed from a participant's address costs at most a
//!    few hundred authentication attempts a second and never crowds out the participant's own
//!    media, which passes on its known SSRCs. Each kind has a budget of its own: forged SRTP
//!    must not use up what the participant's ICE consent checks need (they name the session's
//!    username, which a forger off the signalling path cannot know), or the browser stops
//!    sending after a few seconds without answers.
//!
//! What is dropped is counted by reason and logged as one summary line at most every
//! [`SUMMARY_INTERVAL`], never a line per datagram. A warning means garbage: what a session's
//! client still had on the way when its session ended (media, reports, a consent check), which
//! every leave brings, is counted apart ([`Drop::Departed`]) and logged at `debug` only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tracing::{debug, warn};

/// How often the counts of dropped datagrams are logged, when there are any.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// How long the addresses of a session that ended are remembered, to tell what its client still
/// sends from garbage: a client stops within a round trip or two of its session's close.
pub const DEPARTED_MEMORY: Duration = Duration::from_secs(10);
/// Addresses of ended sessions remembered at most; beyond that, stray packets count as unknown.
const MAX_DEPARTED: usize = 16_384;
/// How many reasons a datagram may be dropped for.
pub const REASON_COUNT: usize = 7;
/// Datagrams per second (and burst) a session may spend authentication on outside its known
/// SSRCs: its new SSRCs' first packets, forged or not.
const SRTP_RATE: f64 = 200.0;
const SRTP_BURST: f64 = 400.0;
/// STUN requests that name the session's username, a second: connectivity checks while ICE
/// starts (a browser sends one per candidate pair every 50 ms or so), then a consent check
/// every few seconds.
const CHECK_RATE: f64 = 100.0;
const CHECK_BURST: f64 = 200.0;
/// Other STUN from the session's addresses, a second: answers to the node's own checks.
const STUN_RATE: f64 = 20.0;
const STUN_BURST: f64 = 40.0;
/// DTLS once the connection is up, a second: retransmitted final flights and the closing alert.
const DTLS_RATE: f64 = 20.0;
const DTLS_BURST: f64 = 40.0;
/// The SRTP and SRTCP authentication tags (80 bits), and SRTCP's index.
const SRTP_TAG: usize = 10;
const SRTCP_TRAILER: usize = SRTP_TAG + 4;

/// What a datagram is, by its first byte (RFC 7983).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A STUN request (first byte 0–3, class bits zero): an ICE connectivity or consent check.
    Check,
    /// Other STUN: answers and indications.
    Stun,
    /// DTLS (20–63).
    Dtls,
    /// RTP (128–191, and not an RTCP packet type).
    Rtp,
    /// RTCP (128–191, second byte 192–223).
    Rtcp,
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// No protocol the node speaks.
    NotMedia,
    /// STUN that names no session, or anything else from an address no session has shown.
    Unknown,
    /// A header that is not well formed for its protocol.
    Malformed,
    /// Outside the session's known SSRCs and over its budget.
    OverBudget,
    /// Passed the gate but was refused by the connection (failed authentication, say).
    Refused,
    /// A relayed packet of another node that did not open with its link's key, came from
    /// another address or came twice.
    Relay,
    /// From an address of a session that ended less than [`DEPARTED_MEMORY`] ago: what its
    /// client still had on the way.
    Departed,
}

/// What a datagram's header says, for the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its protocol.
    pub kind: Kind,
    /// The SSRC of an RTP packet, or the sender SSRC of an RTCP packet.
    pub ssrc: Option<u32>,
}

/// Reads the header of `datagram` as far as the gate needs it, or says why not.
pub fn inspect(datagram: &[u8]) -> Result<Header, Drop> {
    let first = *datagram.first().ok_or(Drop::NotMedia)?;
    let kind = match first {
        0..=3 if first & 0x01 == 0 && datagram.get(1).is_some_and(|b| b & 0x10 == 0) => Kind::Check,
        0..=3 => Kind::Stun,
        20..=63 => Kind::Dtls,
        128..=191 => match datagram.get(1) {
            Some(192..=223) => Kind::Rtcp,
            _ => Kind::Rtp,
        },
        _ => return Err(Drop::NotMedia),
    };
    let well_formed = match kind {
        // A STUN header with the magic cookie and a length that fits.
        Kind::Check | Kind::Stun => super::demux::is_stun(datagram) && stun_length_fits(datagram),
        // A record header: handshake, alert, change cipher spec or application data, a DTLS
        // version, and a length that fits.
        Kind::Dtls => {
            datagram.len() >= 13
                && (20..=23).contains(&first)
                && datagram[1] == 0xfe
                && record_length_fits(datagram)
        }
        // Version 2, a fixed header, an authentication tag.
        Kind::Rtp => datagram.len() >= 12 + SRTP_TAG,
        // Version 2, a length in words that fits before SRTCP's trailer.
        Kind::Rtcp => {
            datagram.len() >= 8 + SRTCP_TRAILER
                && (usize::from(u16::from_be_bytes([datagram[2], datagram[3]])) + 1) * 4
                    <= datagram.len() - SRTCP_TRAILER
        }
    };
    if !well_formed {
        return Err(Drop::Malformed);
    }
    let word = |at: usize| {
        u32::from_be_bytes([
            datagram[at],
            datagram[at + 1],
            datagram[at + 2],
            datagram[at + 3],
        ])
    };
    let ssrc = match kind {
        Kind::Rtp => Some(word(8)),
        Kind::Rtcp => Some(word(4)),
        Kind::Check | Kind::Stun | Kind::Dtls => None,
    };
    Ok(Header { kind, ssrc })
}

fn stun_length_fits(datagram: &[u8]) -> bool {
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    20 + length == datagram.len() && length % 4 == 0
}

fn record_length_fits(datagram: &[u8]) -> bool {
    let length = usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
    13 + length <= datagram.len()
}

/// A token bucket: how much of its budget a session may still spend on datagrams on probation.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Budget {
    /// A full bucket that refills at `rate` a second up to `burst`.
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes one datagram's worth, if there is any left.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The most SSRCs a session's gate remembers: a client sends on a handful.
const MAX_KNOWN_SSRCS: usize = 64;

/// What the gate knows of one session: the SSRCs whose packets authenticated, and the budgets
/// for everything else.
#[derive(Debug)]
pub struct SessionGate {
    known: Vec<u32>,
    srtp: Budget,
    checks: Budget,
    stun: Budget,
    dtls: Budget,
}

impl Default for SessionGate {
    fn default() -> Self {
        Self {
            known: Vec::new(),
            srtp: Budget::new(SRTP_RATE, SRTP_BURST),
            checks: Budget::new(CHECK_RATE, CHECK_BURST),
            stun: Budget::new(STUN_RATE, STUN_BURST),
            dtls: Budget::new(DTLS_RATE, DTLS_BURST),
        }
    }
}

/// What the gate makes of a datagram from a session's client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// On an SSRC that authenticated before, or part of the handshake: it passes.
    Known,
    /// Not known yet; it passes on its kind's budget.
    Probation,
    /// Not known, and its kind's budget is spent.
    OverBudget,
}

impl SessionGate {
    /// What becomes of a datagram with `header` (`connected` says whether the session's DTLS
    /// handshake is done): packets on a known SSRC and the handshake pass, everything else
    /// while its kind's budget lasts.
    pub fn admit(&mut self, now: Instant, header: Header, connected: bool) -> Verdict {
        let budget = match header.kind {
            Kind::Rtp | Kind::Rtcp => {
                if header.ssrc.is_some_and(|ssrc| self.knows(ssrc)) {
                    return Verdict::Known;
                }
                &mut self.srtp
            }
            Kind::Dtls if !connected => return Verdict::Known,
            Kind::Dtls => &mut self.dtls,
            Kind::Check => &mut self.checks,
            Kind::Stun => &mut self.stun,
        };
        if budget.take(now) {
            Verdict::Probation
        } else {
            Verdict::OverBudget
        }
    }

    /// Whether packets of `ssrc` authenticated before.
    pub fn knows(&self, ssrc: u32) -> bool {
        self.known.contains(&ssrc)
    }

    /// A packet of `ssrc`, which the gate did not know, authenticated.
    pub fn learn(&mut self, ssrc: u32) {
        if self.known.len() < MAX_KNOWN_SSRCS {
            self.known.push(ssrc);
        }
    }
}

/// Counts of dropped datagrams since the last summary.
#[derive(Debug, Default)]
pub struct Drops {
    counts: [u64; REASON_COUNT],
    /// Every datagram dropped since the node started.
    pub all_time: u64,
    /// The same, by reason.
    pub all_time_by_reason: [u64; REASON_COUNT],
    /// Summary lines logged as warnings since the node started.
    pub summaries: u64,
    /// The addresses of sessions that ended, with when.
    departed: FxHashMap<SocketAddr, Instant>,
    /// A source of the latest drop from a stranger, to name in the summary. A participant's
    /// address is never named: logs keep no personal data.
    example: Option<SocketAddr>,
    next_summary: Option<Instant>,
}

impl Drops {
    /// Counts a dropped datagram from `from`, a source that belongs to no session (a
    /// stranger, or another node): the summary may name it.
    pub fn count(&mut self, reason: Drop, from: SocketAddr) {
        self.tally(reason);
        self.example = Some(from);
    }

    /// Counts a dropped datagram from a participant's address, which the summary does not name.
    pub fn count_participants(&mut self, reason: Drop) {
        self.tally(reason);
    }

    fn tally(&mut self, reason: Drop) {
        self.counts[reason as usize] += 1;
        self.all_time += 1;
        self.all_time_by_reason[reason as usize] += 1;
    }

    /// Counts a datagram from `from` that belongs to no session: one from a session that
    /// ended moments ago, or garbage from an unknown source.
    pub fn count_unrouted(&mut self, now: Instant, from: SocketAddr) {
        let departed = self
            .departed
            .get(&from)
            .is_some_and(|at| now.duration_since(*at) < DEPARTED_MEMORY);
        if departed {
            // Counted, but not named as the summary's example of garbage.
            self.tally(Drop::Departed);
        } else {
            self.count(Drop::Unknown, from);
        }
    }

    /// Remembers the addresses of a session that ended at `now`.
    pub fn departed(&mut self, now: Instant, addresses: impl IntoIterator<Item = SocketAddr>) {
        for address in addresses {
            if self.departed.len() < MAX_DEPARTED || self.departed.contains_key(&address) {
                self.departed.insert(address, now);
            }
        }
    }

    /// Every datagram dropped since the last summary.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Logs what was dropped: as a warning at most once per [`SUMMARY_INTERVAL`] when any of it
    /// was garbage; at `debug`, without holding back the next warning, when all of it came from
    /// sessions that had just ended. Returns whether it warned. Forgets ended sessions'
    /// addresses after [`DEPARTED_MEMORY`].
    pub fn summarise(&mut self, now: Instant) -> bool {
        self.departed
            .retain(|_, at| now.duration_since(*at) < DEPARTED_MEMORY);
        if self.next_summary.is_some_and(|at| now < at) || self.total() == 0 {
            return false;
        }
        let [
            not_media,
            unknown,
            malformed,
            over_budget,
            refused,
            relay,
            departed,
        ] = self.counts;
        let garbage = self.total() > departed;
        if garbage {
            self.next_summary = Some(now + SUMMARY_INTERVAL);
            warn!(
                not_media,
                unknown_source = unknown,
                malformed,
                over_budget,
                refused,
                relay,
                departed,
                example_source = ?self.example,
                "dropped datagrams on the media port"
            );
            self.summaries += 1;
        } else {
            debug!(
                departed,
                "dropped what clients sent after their sessions ended"
            );
        }
        self.counts = [0; REASON_COUNT];
        self.example = None;
        garbage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_is_told_apart_by_its_first_bytes() {
        let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
        rtp.resize(40, 0);
        assert_eq!(
            inspect(&rtp),
            Ok(Header {
                kind: Kind::Rtp,
                ssrc: Some(0xdead_beef)
            })
        );
        let mut rtcp = vec![0x80, 200, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0];
        rtcp.resize(8 + 4 + SRTCP_TRAILER, 0);
        assert_eq!(
            inspect(&rtcp).map(|h| (h.kind, h.ssrc)),
            Ok((Kind::Rtcp, Some(7)))
        );
        let mut dtls = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4];
        dtls.resize(17, 0);
        assert_eq!(inspect(&dtls).map(|h| h.kind), Ok(Kind::Dtls));
        assert_eq!(
            inspect(&[0x47; 100]),
            Err(Drop::NotMedia),
            "not a protocol of the node"
        );
        assert_eq!(inspect(&[]), Err(Drop::NotMedia));
    }

    #[test]
    fn headers_that_do_not_fit_their_length_are_malformed() {
        assert_eq!(
            inspect(&[0x80, 96, 0, 1]),
            Err(Drop::Malformed),
            "a short RTP packet"
        );
        let mut rtcp = vec![0x80, 200, 0, 40, 0, 0, 0, 7];
        rtcp.resize(30, 0);
        assert_eq!(
            inspect(&rtcp),
            Err(Drop::Malformed),
            "RTCP longer than the datagram"
        );
        let mut dtls = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        dtls.resize(20, 0);
        assert_eq!(
            inspect(&dtls),
            Err(Drop::Malformed),
            "a record longer than the datagram"
        );
        let mut stun = vec![0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42];
        stun.resize(20, 0);
        assert_eq!(
            inspect(&stun),
            Err(Drop::Malformed),
            "STUN attributes that are missing"
        );
        for length in 0..64 {
            let garbage: Vec<u8> = (0..length).map(|i| (i * 151 + 7) as u8).collect();
            let _ = inspect(&garbage);
        }
    }

    #[test]
    fn the_budget_allows_a_burst_then_its_rate() {
        let mut budget = Budget::new(SRTP_RATE, SRTP_BURST);
        let start = Instant::now();
        let allowed = (0..1000).filter(|_| budget.take(start)).count();
        assert_eq!(allowed, SRTP_BURST as usize);
        let later = start + Duration::from_millis(100);
        let refilled = (0..1000).filter(|_| budget.take(later)).count();
        assert_eq!(refilled, (SRTP_RATE / 10.0) as usize);
    }

    #[test]
    fn forged_srtp_does_not_use_up_what_consent_checks_need() {
        let mut gate = SessionGate::default();
        gate.learn(7);
        let now = Instant::now();
        let forged = Header {
            kind: Kind::Rtp,
            ssrc: Some(99),
        };
        let spent = (0..10_000)
            .filter(|_| gate.admit(now, forged, true) == Verdict::Probation)
            .count();
        assert_eq!(
            spent, SRTP_BURST as usize,
            "forged SRTP only while its budget lasts"
        );
        let check = Header {
            kind: Kind::Check,
            ssrc: None,
        };
        assert_eq!(
            gate.admit(now, check, true),
            Verdict::Probation,
            "a consent check still passes"
        );
        let known = Header {
            kind: Kind::Rtcp,
            ssrc: Some(7),
        };
        assert_eq!(
            gate.admit(now, known, true),
            Verdict::Known,
            "a known SSRC always passes"
        );
        let handshake = Header {
            kind: Kind::Dtls,
            ssrc: None,
        };
        assert_eq!(
            gate.admit(now, handshake, false),
            Verdict::Known,
            "the handshake is never on probation"
        );
    }

    #[test]
    fn a_participants_address_is_never_the_example() {
        let mut drops = Drops::default();
        let participant = SocketAddr::from(([192, 0, 2, 1], 9));
        drops.count_participants(Drop::Refused);
        drops.count_participants(Drop::OverBudget);
        assert_eq!(drops.example, None, "{participant} is not named");
        assert_eq!(drops.total(), 2, "but what it sent is counted");
        let stranger = SocketAddr::from(([192, 0, 2, 2], 9));
        drops.count(Drop::Unknown, stranger);
        assert_eq!(drops.example, Some(stranger));
    }

    #[test]
    fn drops_are_summarised_at_most_every_interval() {
        let mut drops = Drops::default();
        let now = Instant::now();
        assert!(!drops.summarise(now), "nothing to say");
        let from = SocketAddr::from(([192, 0, 2, 1], 9));
        drops.count(Drop::Unknown, from);
        assert!(drops.summarise(now));
        drops.count(Drop::Malformed, from);
        assert!(!drops.summarise(now + Duration::from_secs(1)), "too soon");
        assert!(drops.summarise(now + SUMMARY_INTERVAL));
        assert_eq!(drops.total(), 0);
    }

    #[test]
    fn what_a_client_sends_after_its_session_ended_is_no_warning_and_garbage_still_is() {
        let mut drops = Drops::default();
        let now = Instant::now();
        let client = SocketAddr::from(([192, 0, 2, 1], 5000));
        let stranger = SocketAddr::from(([192, 0, 2, 2], 5000));
        drops.departed(now, [client]);
        for _ in 0..40 {
            drops.count_unrouted(now + Duration::from_millis(100), client);
        }
        assert_eq!(drops.all_time_by_reason[Drop::Departed as usize], 40);
        assert!(
            !drops.summarise(now + Duration::from_millis(200)),
            "a leave is no reason to warn"
        );
        assert_eq!(drops.total(), 0, "but it was summarised");
        drops.count_unrouted(now + Duration::from_millis(300), stranger);
        drops.count_unrouted(now + Duration::from_millis(300), client);
        assert_eq!(
            drops.example,
            Some(stranger),
            "the garbage's source is the example"
        );
        assert!(
            drops.summarise(now + Duration::from_millis(400)),
            "garbage from an unknown source still warns, and the leave did not hold it back"
        );
        assert_eq!(drops.all_time_by_reason[Drop::Unknown as usize], 1);
        // Long after the session ended, its address is a stranger's again.
        let long_after = now + DEPARTED_MEMORY * 3;
        drops.count_unrouted(long_after, client);
        assert_eq!(drops.all_time_by_reason[Drop::Unknown as usize], 2);
        assert!(drops.summarise(long_after));
        assert!(drops.departed.is_empty(), "forgotten");
    }
}

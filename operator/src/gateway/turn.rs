//! TURN servers for participants whose network lets nothing out but HTTPS: the gateway hands
//! each participant credentials for the platform's own TURN server (coturn, in its
//! `use-auth-secret` mode), which relays their media over TLS on port 443.
//!
//! The credentials are the standard time-limited ones of a shared secret (the "TURN REST API"
//! that coturn and others implement): the user name is the expiry in seconds since 1970, a colon
//! and a random id (never a participant's name), the password the base64 of HMAC-SHA1 over the
//! user name, keyed with the secret. TURN servers check them without asking anyone; nothing of
//! them is kept. They last [`Turn::lifetime`] from the join; a participant who resumes or moves
//! gets new ones, and the page uses the newest for each media connection it makes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use treffpunkt_proto::signalling::IceServer;
use treffpunkt_proto::{base64, random};

/// How long credentials last by default: longer than a meeting on one media connection, so
/// that the relay is not cut while it runs (a TURN server checks them again on every refresh).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The platform's TURN servers and their shared secret.
#[derive(Clone)]
pub struct Turn {
    urls: Vec<String>,
    key: hmac::Key,
    lifetime: Duration,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Turn")
            .field("urls", &self.urls)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Turn {
    /// TURN servers at `urls` (`turn:` or `turns:`), whose credentials are made with `secret`
    /// and last `lifetime`.
    pub fn new(urls: Vec<String>, secret: &[u8], lifetime: Duration) -> Result<Self, String> {
        if urls.is_empty() {
            return Err("no TURN URL".to_owned());
        }
        if let Some(bad) = urls
            .iter()
            .find(|url| !(url.starts_with("turn:") || url.starts_with("turns:")))
        {
            return Err(format!("{bad:?} is not a turn: or turns: URL"));
        }
        if secret.len() < 16 {
            return Err("the TURN secret must have at least 16 bytes".to_owned());
        }
        Ok(Self {
            urls,
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret),
            lifetime,
        })
    }

    /// Fresh credentials, valid from `now` for the lifetime.
    pub fn credentials(&self, now: SystemTime) -> IceServer {
        let expires = (now + self.lifetime)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let username = format!("{expires}:{}", random::hex(8));
        let credential = base64::standard(hmac::sign(&self.key, username.as_bytes()).as_ref());
        IceServer {
            urls: self.urls.clone(),
            username,
            credential,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_the_standard_ones_of_a_shared_secret() {
        let turn = Turn::new(
            vec!["turns:turn.example:443?transport=tcp".into()],
            b"a shared secret of the platform",
            Duration::from_secs(3600),
        )
        .unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let server = turn.credentials(now);
        let (expiry, id) = server.username.split_once(':').unwrap();
        assert_eq!(expiry, "1700003600");
        assert_eq!(id.len(), 16, "a random id, never a name");
        // What a TURN server computes from the same secret: base64(HMAC-SHA1(secret, user)).
        let key = hmac::Key::new(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            b"a shared secret of the platform",
        );
        let expected = base64::standard(hmac::sign(&key, server.username.as_bytes()).as_ref());
        assert_eq!(server.credential, expected);
        assert_eq!(server.credential.len(), 28, "20 bytes, padded");
        assert_ne!(turn.credentials(now).username, server.username, "fresh ids");
    }

    #[test]
    fn bad_settings_are_refused() {
        let secret = b"a shared secret of the platform";
        let hour = Duration::from_secs(3600);
        assert!(Turn::new(Vec::new(), secret, hour).is_err());
        assert!(Turn::new(vec!["https://turn.example".into()], secret, hour).is_err());
        assert!(Turn::new(vec!["turn:turn.example".into()], b"short", hour).is_err());
    }
}

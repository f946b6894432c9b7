//! Signing and checking the grants that admit participants to a node.
//!
//! The control plane signs every [`Grant`] with a key it shares with its media nodes; a node
//! admits a session only with a valid, unexpired grant. The signature covers the grant's
//! protobuf encoding, which is deterministic for a given message in prost.

use prost::Message;
use ring::hmac;

use crate::v1::Grant;

/// The shared secret of a control plane and its nodes.
#[derive(Clone)]
pub struct GrantKey(hmac::Key);

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantKey(..)")
    }
}

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The signature does not match.
    #[error("the grant's signature is invalid")]
    BadSignature,
    /// The grant is older than its expiry.
    #[error("the grant has expired")]
    Expired,
}

impl GrantKey {
    /// A key from shared secret bytes (at least 32 recommended).
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// Signs `grant`.
    pub fn sign(&self, grant: &Grant) -> Vec<u8> {
        hmac::sign(&self.0, &grant.encode_to_vec())
            .as_ref()
            .to_vec()
    }

    /// Checks `signature` over `grant` and that the grant has not expired at `now_unix_ms`.
    pub fn verify(
        &self,
        grant: &Grant,
        signature: &[u8],
        now_unix_ms: u64,
    ) -> Result<(), GrantError> {
        hmac::verify(&self.0, &grant.encode_to_vec(), signature)
            .map_err(|_| GrantError::BadSignature)?;
        if grant.expires_at_unix_ms < now_unix_ms {
            return Err(GrantError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_verifies_only_unchanged_and_in_time() {
        let key = GrantKey::new(b"0123456789abcdef0123456789abcdef");
        let grant = Grant {
            participant_id: "p1".into(),
            can_publish: true,
            expires_at_unix_ms: 2_000,
            ..Default::default()
        };
        let signature = key.sign(&grant);
        assert_eq!(key.verify(&grant, &signature, 1_000), Ok(()));
        assert_eq!(
            key.verify(&grant, &signature, 3_000),
            Err(GrantError::Expired)
        );
        let forged = Grant {
            can_subscribe: true,
            ..grant.clone()
        };
        assert_eq!(
            key.verify(&forged, &signature, 1_000),
            Err(GrantError::BadSignature)
        );
        let other = GrantKey::new(b"another key another key another!");
        assert_eq!(
            other.verify(&grant, &signature, 1_000),
            Err(GrantError::BadSignature)
        );
    }
}

//! Signing and checking the grants that admit participants to a node.
//!
//! The control plane signs every [`Grant`] with a key it shares with its media nodes; a node
//! admits a session only with a valid, unexpired grant. The signature covers the grant's
//! protobuf encoding, which is deterministic for a given message in prost.

use prost::Message;
use ring::hmac;

use crate::v1::{Grant, ResumeTicket};

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

    /// A resume ticket as text for the client: the ticket and its signature, base64url.
    pub fn seal_ticket(&self, ticket: &ResumeTicket) -> String {
        let bytes = ticket.encode_to_vec();
        let signature = hmac::sign(&self.0, &bytes);
        format!("{}.{}", base64url(&bytes), base64url(signature.as_ref()))
    }

    /// Opens a resume ticket sealed by [`Self::seal_ticket`], if it is genuine and unexpired.
    pub fn open_ticket(&self, text: &str, now_unix_ms: u64) -> Result<ResumeTicket, GrantError> {
        let (body, signature) = text.split_once('.').ok_or(GrantError::BadSignature)?;
        let body = unbase64url(body).ok_or(GrantError::BadSignature)?;
        let signature = unbase64url(signature).ok_or(GrantError::BadSignature)?;
        hmac::verify(&self.0, &body, &signature).map_err(|_| GrantError::BadSignature)?;
        let ticket = ResumeTicket::decode(body.as_slice()).map_err(|_| GrantError::BadSignature)?;
        if ticket.expires_at_unix_ms < now_unix_ms {
            return Err(GrantError::Expired);
        }
        Ok(ticket)
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

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url: safe in JSON and URLs.
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(BASE64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn unbase64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let digits: Option<Vec<u32>> = text
        .bytes()
        .map(|c| BASE64URL.iter().position(|d| *d == c).map(|p| p as u32))
        .collect();
    for chunk in digits?.chunks(4) {
        if chunk.len() < 2 {
            return None;
        }
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | d << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
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

    #[test]
    fn tickets_round_trip_and_refuse_tampering() {
        let key = GrantKey::new(b"0123456789abcdef0123456789abcdef");
        for name in ["", "A", "Ab", "Abc", "Anna Müller"] {
            let ticket = ResumeTicket {
                session_id: "s1".into(),
                display_name: name.into(),
                expires_at_unix_ms: 5_000,
                ..Default::default()
            };
            let sealed = key.seal_ticket(&ticket);
            assert_eq!(key.open_ticket(&sealed, 1_000), Ok(ticket.clone()));
            assert_eq!(key.open_ticket(&sealed, 9_000), Err(GrantError::Expired));
            let mut tampered = sealed.clone().into_bytes();
            tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            assert_eq!(
                key.open_ticket(&tampered, 1_000),
                Err(GrantError::BadSignature)
            );
        }
        for garbage in ["", ".", "no-dot", "!!!.???", "A.B"] {
            assert!(key.open_ticket(garbage, 0).is_err());
        }
    }
}

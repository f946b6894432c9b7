//! Signing and checking the platform's tokens: the grants that admit a participant to a media
//! node, and the resume tickets with which a client picks its session up again.
//!
//! A token ([`SignedToken`]) carries the bytes of a message's encoding, the id of the key that
//! signed them and an HMAC-SHA256 over its type, that id and those bytes. Whoever checks it
//! checks the bytes as received and only then decodes them, so a field that the receiver does
//! not know (a newer control plane during a rolling upgrade) breaks nothing. The type keeps a
//! ticket from passing as a grant; a grant names its audience, the one node that may admit it.
//! A media node proves with a signed [`AttachClaim`] that it holds the grant key when it
//! registers.
//!
//! A [`Keyring`] signs with one key and accepts several, by id: to rotate, give every checker
//! the new key as an accepted one first, then sign with it, then drop the old one. Holders
//! keep it in a [`SharedKeyring`], which is replaced as the keys change. Grants and
//! tickets are signed with different keyrings: the media nodes hold the grant key only, so a
//! node cannot make tickets.

use prost::Message;
use ring::{digest, hmac};

use crate::base64;

use crate::v1::{AttachClaim, Grant, Invitation, ResumeTicket, RoomRef, SignedToken};

/// A key for signing and checking tokens, with its id.
#[derive(Clone)]
pub struct TokenKey {
    id: String,
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", self.id)
    }
}

impl TokenKey {
    /// A key from secret bytes (32 or more); its id is derived from them, so every holder of
    /// the secret names it alike and the id says nothing about the secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(b"treffpunkt key id\0");
        context.update(secret);
        let id = crate::random::to_hex(&context.finish().as_ref()[..6]);
        Self {
            id,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }
}

/// What a token is: its type goes into the signature.
#[derive(Clone, Copy, Debug)]
enum TokenType {
    Grant,
    Ticket,
    Attach,
    Invitation,
}

impl TokenType {
    fn tag(self) -> &'static [u8] {
        match self {
            Self::Grant => b"treffpunkt grant v1\0",
            Self::Ticket => b"treffpunkt resume ticket v1\0",
            Self::Attach => b"treffpunkt attach claim v1\0",
            Self::Invitation => b"treffpunkt invitation v1\0",
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The signature does not match, or the token is not even well formed.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// Signed with a key this keyring does not accept.
    #[error("the token was signed with a key that is not accepted ({0})")]
    UnknownKey(String),
    /// The token is older than its expiry.
    #[error("the token has expired")]
    Expired,
    /// A grant for another media node, or an invitation into another room.
    #[error("the token is for another media node or room")]
    WrongAudience,
    /// An attach claim made too long ago, or in the future.
    #[error("the claim is not from now (the clocks must agree within {} s)", ATTACH_CLAIM_WINDOW_MS / 1000)]
    Stale,
}

/// The fewest bytes a secret written as text may have.
pub const MIN_SECRET_BYTES: usize = 16;

/// Why secrets written as text make no keyring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// There is no secret at all.
    #[error("no key is given")]
    Empty,
    /// A secret is too short to be one.
    #[error("a key of {0} bytes is too short; it must have at least {MIN_SECRET_BYTES}")]
    TooShort(usize),
}

/// Milliseconds since the Unix epoch, as tokens count time (0 for a clock before 1970).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// How far an attach claim's time may be from the checker's clock.
pub const ATTACH_CLAIM_WINDOW_MS: u64 = 5 * 60 * 1000;

/// One key to sign with and the keys accepted when checking, by id.
#[derive(Clone, Debug)]
pub struct Keyring {
    signing: TokenKey,
    accepted: Vec<TokenKey>,
}

impl Keyring {
    /// A keyring that signs with, and accepts, `signing`.
    pub fn new(signing: TokenKey) -> Self {
        Self {
            accepted: vec![signing.clone()],
            signing,
        }
    }

    /// A keyring of one key made from `secret`.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self::new(TokenKey::new(secret))
    }

    /// A keyring from secrets written as text, comma-separated: the first signs, all are
    /// accepted (`new,old` while a key is rotated). Each must have [`MIN_SECRET_BYTES`].
    pub fn from_secrets(text: &str) -> Result<Self, KeyringError> {
        let secrets: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(short) = secrets.iter().find(|s| s.len() < MIN_SECRET_BYTES) {
            return Err(KeyringError::TooShort(short.len()));
        }
        let (first, rest) = secrets.split_first().ok_or(KeyringError::Empty)?;
        let signing = Self::from_secret(first.as_bytes());
        Ok(rest.iter().fold(signing, |ring, secret| {
            ring.accepting(TokenKey::new(secret.as_bytes()))
        }))
    }

    /// The keyring written in `file`, or else in the environment variable `variable` (never a
    /// flag: a command line is visible to every user of the machine); `None` when neither
    /// holds a key.
    pub fn from_file_or_env(
        file: Option<&std::path::Path>,
        variable: &str,
    ) -> Result<Option<Self>, String> {
        let text = match file {
            Some(file) => std::fs::read_to_string(file)
                .map_err(|error| format!("reading the key from {}: {error}", file.display()))?,
            None => std::env::var(variable).unwrap_or_default(),
        };
        match Self::from_secrets(&text) {
            Ok(keyring) => Ok(Some(keyring)),
            Err(KeyringError::Empty) => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The ids of the accepted keys, the signing key's first.
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids = vec![self.signing.id.as_str()];
        ids.extend(
            self.accepted
                .iter()
                .map(|key| key.id.as_str())
                .filter(|id| *id != self.signing.id),
        );
        ids
    }

    /// Also accepts tokens signed with `key` (the one being rotated in, or out).
    pub fn accepting(mut self, key: TokenKey) -> Self {
        if !self.accepted.iter().any(|k| k.id == key.id) {
            self.accepted.push(key);
        }
        self
    }

    fn mac_input(kind: TokenType, key_id: &str, body: &[u8]) -> Vec<u8> {
        let mut input = Vec::with_capacity(kind.tag().len() + key_id.len() + 1 + body.len());
        input.extend_from_slice(kind.tag());
        input.extend_from_slice(key_id.as_bytes());
        input.push(0);
        input.extend_from_slice(body);
        input
    }

    fn sign(&self, kind: TokenType, body: Vec<u8>) -> SignedToken {
        let key_id = self.signing.id.clone();
        let signature = hmac::sign(&self.signing.key, &Self::mac_input(kind, &key_id, &body));
        SignedToken {
            key_id,
            body,
            signature: signature.as_ref().to_vec(),
        }
    }

    /// The token's body, if its signature is one of an accepted key's for a token of `kind`.
    fn check<'a>(&self, kind: TokenType, token: &'a SignedToken) -> Result<&'a [u8], GrantError> {
        let key = self
            .accepted
            .iter()
            .find(|key| key.id == token.key_id)
            .ok_or_else(|| GrantError::UnknownKey(token.key_id.chars().take(16).collect()))?;
        let input = Self::mac_input(kind, &token.key_id, &token.body);
        hmac::verify(&key.key, &input, &token.signature).map_err(|_| GrantError::BadSignature)?;
        Ok(&token.body)
    }

    /// A key of 32 bytes derived from the signing key for `label`: whoever holds the keyring
    /// derives the same, nobody else can.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut input = b"treffpunkt derived key v1\0".to_vec();
        input.extend_from_slice(label);
        let tag = hmac::sign(&self.signing.key, &input);
        let mut key = [0u8; 32];
        key.copy_from_slice(&tag.as_ref()[..32]);
        key
    }

    /// Signs `grant`.
    pub fn sign_grant(&self, grant: &Grant) -> SignedToken {
        self.sign(TokenType::Grant, grant.encode_to_vec())
    }

    /// The grant in `token`, if an accepted key signed it as a grant, it is for `audience` (the
    /// node's id) and it has not expired at `now_unix_ms`.
    pub fn open_grant(
        &self,
        token: &SignedToken,
        audience: &str,
        now_unix_ms: u64,
    ) -> Result<Grant, GrantError> {
        let body = self.check(TokenType::Grant, token)?;
        let grant = Grant::decode(body).map_err(|_| GrantError::BadSignature)?;
        if grant.node_id != audience {
            return Err(GrantError::WrongAudience);
        }
        if grant.expires_at_unix_ms < now_unix_ms {
            return Err(GrantError::Expired);
        }
        Ok(grant)
    }

    /// Signs a node's `claim` when it registers.
    pub fn sign_attach(&self, claim: &AttachClaim) -> SignedToken {
        self.sign(TokenType::Attach, claim.encode_to_vec())
    }

    /// The claim in `token`, if an accepted key signed it as an attach claim made within
    /// [`ATTACH_CLAIM_WINDOW_MS`] of `now_unix_ms`.
    pub fn open_attach(
        &self,
        token: &SignedToken,
        now_unix_ms: u64,
    ) -> Result<AttachClaim, GrantError> {
        let body = self.check(TokenType::Attach, token)?;
        let claim = AttachClaim::decode(body).map_err(|_| GrantError::BadSignature)?;
        if claim.issued_at_unix_ms.abs_diff(now_unix_ms) > ATTACH_CLAIM_WINDOW_MS {
            return Err(GrantError::Stale);
        }
        Ok(claim)
    }

    /// A token of `kind` as text: key id, body and signature, base64url, joined by dots.
    fn seal(&self, kind: TokenType, body: Vec<u8>) -> String {
        let token = self.sign(kind, body);
        format!(
            "{}.{}.{}",
            base64::url(token.key_id.as_bytes()),
            base64::url(&token.body),
            base64::url(&token.signature)
        )
    }

    /// The body of a token of `kind` sealed by [`Self::seal`], if an accepted key signed it.
    fn unseal(&self, kind: TokenType, text: &str) -> Result<Vec<u8>, GrantError> {
        let mut parts = text.split('.');
        let (Some(key_id), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(GrantError::BadSignature);
        };
        let decode = |part: &str| base64::from_url(part).ok_or(GrantError::BadSignature);
        let token = SignedToken {
            key_id: String::from_utf8(decode(key_id)?).map_err(|_| GrantError::BadSignature)?,
            body: decode(body)?,
            signature: decode(signature)?,
        };
        self.check(kind, &token)?;
        Ok(token.body)
    }

    /// A resume ticket as text for the client.
    pub fn seal_ticket(&self, ticket: &ResumeTicket) -> String {
        self.seal(TokenType::Ticket, ticket.encode_to_vec())
    }

    /// Opens a resume ticket sealed by [`Self::seal_ticket`], if it is genuine and unexpired.
    pub fn open_ticket(&self, text: &str, now_unix_ms: u64) -> Result<ResumeTicket, GrantError> {
        let body = self.unseal(TokenType::Ticket, text)?;
        let ticket = ResumeTicket::decode(body.as_slice()).map_err(|_| GrantError::BadSignature)?;
        if ticket.expires_at_unix_ms < now_unix_ms {
            return Err(GrantError::Expired);
        }
        Ok(ticket)
    }

    /// An invitation as text for a link (signed with a tenant's own key).
    pub fn seal_invitation(&self, invitation: &Invitation) -> String {
        self.seal(TokenType::Invitation, invitation.encode_to_vec())
    }

    /// Opens an invitation sealed by [`Self::seal_invitation`], if it is genuine, for `room`
    /// and unexpired at `now_unix_ms`.
    pub fn open_invitation(
        &self,
        text: &str,
        room: &RoomRef,
        now_unix_ms: u64,
    ) -> Result<Invitation, GrantError> {
        let body = self.unseal(TokenType::Invitation, text)?;
        let invitation =
            Invitation::decode(body.as_slice()).map_err(|_| GrantError::BadSignature)?;
        if invitation.room.as_ref() != Some(room) {
            return Err(GrantError::WrongAudience);
        }
        if invitation.expires_at_unix_ms < now_unix_ms {
            return Err(GrantError::Expired);
        }
        Ok(invitation)
    }
}

/// A keyring that is replaced while in use, when its keys are rotated: every holder signs and
/// checks with the newest from then on.
#[derive(Clone, Debug)]
pub struct SharedKeyring(std::sync::Arc<std::sync::RwLock<Keyring>>);

impl SharedKeyring {
    /// Shares `keyring`.
    pub fn new(keyring: Keyring) -> Self {
        Self(std::sync::Arc::new(std::sync::RwLock::new(keyring)))
    }

    /// The keyring now.
    pub fn get(&self) -> Keyring {
        // Only whole keyrings are written: a poisoned lock still holds a consistent one.
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the keyring; returns whether its keys changed.
    pub fn set(&self, keyring: Keyring) -> bool {
        let mut current = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = current.key_ids() != keyring.key_ids();
        *current = keyring;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(secret: &[u8]) -> Keyring {
        Keyring::from_secret(secret)
    }

    fn grant() -> Grant {
        Grant {
            participant_id: "p1".into(),
            can_publish: true,
            expires_at_unix_ms: 2_000,
            node_id: "node-a".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_grant_opens_only_unchanged_in_time_and_on_its_node() {
        let keys = keyring(b"0123456789abcdef0123456789abcdef");
        let token = keys.sign_grant(&grant());
        assert_eq!(keys.open_grant(&token, "node-a", 1_000), Ok(grant()));
        assert_eq!(
            keys.open_grant(&token, "node-a", 3_000),
            Err(GrantError::Expired)
        );
        assert_eq!(
            keys.open_grant(&token, "node-b", 1_000),
            Err(GrantError::WrongAudience)
        );
        let mut forged = token.clone();
        forged.body = Grant {
            can_subscribe: true,
            ..grant()
        }
        .encode_to_vec();
        assert_eq!(
            keys.open_grant(&forged, "node-a", 1_000),
            Err(GrantError::BadSignature)
        );
        let other = keyring(b"another key another key another!");
        assert_eq!(
            other.open_grant(&token, "node-a", 1_000),
            Err(GrantError::UnknownKey(keys.signing.id.clone()))
        );
    }

    #[test]
    fn the_signature_covers_the_bytes_received_with_fields_the_checker_does_not_know() {
        let keys = keyring(b"0123456789abcdef0123456789abcdef");
        let mut token = keys.sign_grant(&grant());
        // A field number this version does not know (a newer control plane's), appended and
        // signed: the grant still opens, though re-encoding it would drop the field.
        token.body.extend_from_slice(&[0xa8, 0x06, 0x01]);
        let input = Keyring::mac_input(TokenType::Grant, &token.key_id, &token.body);
        token.signature = hmac::sign(&keys.signing.key, &input).as_ref().to_vec();
        assert_eq!(keys.open_grant(&token, "node-a", 1_000), Ok(grant()));
    }

    #[test]
    fn a_ticket_does_not_pass_as_a_grant() {
        let keys = keyring(b"0123456789abcdef0123456789abcdef");
        let ticket = ResumeTicket {
            session_id: "s1".into(),
            expires_at_unix_ms: 5_000,
            ..Default::default()
        };
        let sealed = keys.seal_ticket(&ticket);
        let parts: Vec<Vec<u8>> = sealed
            .split('.')
            .map(|p| base64::from_url(p).unwrap())
            .collect();
        let token = SignedToken {
            key_id: String::from_utf8(parts[0].clone()).unwrap(),
            body: parts[1].clone(),
            signature: parts[2].clone(),
        };
        assert_eq!(
            keys.open_grant(&token, "", 1_000),
            Err(GrantError::BadSignature)
        );
    }

    #[test]
    fn an_attach_claim_opens_only_if_fresh_and_no_other_token_passes_as_one() {
        let keys = keyring(b"0123456789abcdef0123456789abcdef");
        let claim = AttachClaim {
            node_id: "node-a".into(),
            instance_id: "1".into(),
            issued_at_unix_ms: 1_000_000,
        };
        let token = keys.sign_attach(&claim);
        assert_eq!(keys.open_attach(&token, 1_060_000), Ok(claim.clone()));
        let late = 1_000_000 + ATTACH_CLAIM_WINDOW_MS + 1;
        assert_eq!(keys.open_attach(&token, late), Err(GrantError::Stale));
        let grant = keys.sign_grant(&grant());
        assert_eq!(
            keys.open_attach(&grant, 1_000_000),
            Err(GrantError::BadSignature)
        );
        let other = keyring(b"another key another key another!");
        assert!(other.open_attach(&token, 1_000_000).is_err());
    }

    #[test]
    fn while_a_key_is_rotated_in_both_are_accepted() {
        let old = TokenKey::new(b"the old key, the old key, the old");
        let new = TokenKey::new(b"the new key, the new key, the new");
        assert_ne!(old.id, new.id);
        let before = Keyring::new(old.clone());
        let checker = Keyring::new(old.clone()).accepting(new.clone());
        let after = Keyring::new(new.clone());
        for signer in [&before, &after] {
            let token = signer.sign_grant(&grant());
            assert_eq!(checker.open_grant(&token, "node-a", 1_000), Ok(grant()));
        }
        let token = after.sign_grant(&grant());
        assert!(before.open_grant(&token, "node-a", 1_000).is_err());
    }

    #[test]
    fn secrets_as_text_sign_with_the_first_and_accept_all() {
        let ring = Keyring::from_secrets(" the new secret key , the old secret key ,").unwrap();
        assert_eq!(ring.signing.id, TokenKey::new(b"the new secret key").id);
        let old = Keyring::from_secret(b"the old secret key").sign_grant(&grant());
        assert_eq!(ring.open_grant(&old, "node-a", 1_000), Ok(grant()));
        assert_eq!(
            Keyring::from_secrets(" , ").err(),
            Some(KeyringError::Empty)
        );
        assert_eq!(
            Keyring::from_secrets("the new secret key,short").err(),
            Some(KeyringError::TooShort(5))
        );
    }

    #[test]
    fn tickets_round_trip_and_refuse_tampering() {
        let keys = keyring(b"0123456789abcdef0123456789abcdef");
        for name in ["", "A", "Ab", "Abc", "Anna Müller"] {
            let ticket = ResumeTicket {
                session_id: "s1".into(),
                display_name: name.into(),
                expires_at_unix_ms: 5_000,
                ..Default::default()
            };
            let sealed = keys.seal_ticket(&ticket);
            assert_eq!(keys.open_ticket(&sealed, 1_000), Ok(ticket.clone()));
            assert_eq!(keys.open_ticket(&sealed, 9_000), Err(GrantError::Expired));
            let (key_id, rest) = sealed.split_once('.').unwrap();
            let mut tampered = rest.to_owned().into_bytes();
            tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
            let tampered = format!("{key_id}.{}", String::from_utf8(tampered).unwrap());
            assert_eq!(
                keys.open_ticket(&tampered, 1_000),
                Err(GrantError::BadSignature)
            );
        }
        for garbage in ["", ".", "..", "no-dot", "!!!.???.!!!", "A.B.C", "a.b.c.d"] {
            assert!(keys.open_ticket(garbage, 0).is_err(), "{garbage}");
        }
    }

    #[test]
    fn an_invitation_opens_only_its_room_until_it_expires_and_only_with_its_tenants_key() {
        let key = Keyring::from_secret(b"the tenant's own key, long enough");
        let room = RoomRef {
            tenant: "verein".into(),
            name: "vorstand".into(),
        };
        let invitation = Invitation {
            room: Some(room.clone()),
            expires_at_unix_ms: 2_000,
            moderator: false,
        };
        let text = key.seal_invitation(&invitation);
        assert_eq!(key.open_invitation(&text, &room, 1_000), Ok(invitation));
        assert_eq!(
            key.open_invitation(&text, &room, 3_000),
            Err(GrantError::Expired)
        );
        let other_room = RoomRef {
            name: "kasse".into(),
            ..room.clone()
        };
        assert_eq!(
            key.open_invitation(&text, &other_room, 1_000),
            Err(GrantError::WrongAudience)
        );
        let rotated = Keyring::from_secret(b"the tenant's next key, long enough");
        assert!(matches!(
            rotated.open_invitation(&text, &room, 1_000),
            Err(GrantError::UnknownKey(_))
        ));
        // A resume ticket is no invitation, even signed with the same key.
        let ticket = key.seal_ticket(&ResumeTicket::default());
        assert_eq!(
            key.open_invitation(&ticket, &room, 1_000),
            Err(GrantError::BadSignature)
        );
        assert!(key.open_invitation("a.b", &room, 1_000).is_err());
    }
}

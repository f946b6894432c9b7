//! The grant key as a file that changes while the node runs: when the operator rotates the
//! key, the file (a mounted Secret) gets the new one, and the node follows it within
//! [`FOLLOW_INTERVAL`] without restarting.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};
use treffpunkt_proto::grant::{Keyring, SharedKeyring};

/// How often a key file is read again.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);

/// Reads `file` every [`FOLLOW_INTERVAL`] and puts the keys written in it into `keys` when they
/// change. A file that cannot be read or holds no valid keys is reported (once per change of
/// its text) and the keys stay as they were.
pub fn follow(file: PathBuf, keys: SharedKeyring) -> JoinHandle<()> {
    follow_every(file, keys, FOLLOW_INTERVAL)
}

/// The same, reading the file every `every`.
fn follow_every(file: PathBuf, keys: SharedKeyring, every: Duration) -> JoinHandle<()> {
    // The text the keys were read from, before anything can change it.
    let mut last = std::fs::read_to_string(&file).ok();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            // A few bytes from a local file: no need to leave the runtime for it.
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(error) => {
                    if last.take().is_some() {
                        warn!(file = %file.display(), %error, "cannot read the key file; keeping the keys");
                    }
                    continue;
                }
            };
            if last.as_deref() == Some(text.as_str()) {
                continue;
            }
            match Keyring::from_secrets(&text) {
                Ok(keyring) => {
                    let ids: Vec<String> =
                        keyring.key_ids().iter().map(|id| id.to_string()).collect();
                    if keys.set(keyring) {
                        info!(file = %file.display(), keys = ?ids, "the keys changed");
                    }
                }
                Err(error) => {
                    warn!(file = %file.display(), %error, "the key file holds no valid keys; keeping the keys");
                }
            }
            last = Some(text);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(20);

    #[tokio::test]
    async fn a_changed_key_file_is_followed_and_a_broken_one_ignored() {
        let dir = std::env::temp_dir().join(format!("treffpunkt-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        let (old, new) = ("an old key of enough length", "a new key of enough length!");
        std::fs::write(&file, old).unwrap();
        let keys = SharedKeyring::new(Keyring::from_secrets(old).unwrap());
        let task = follow_every(file.clone(), keys.clone(), EVERY);
        let id = |secret: &str| Keyring::from_secrets(secret).unwrap().key_ids()[0].to_owned();

        std::fs::write(&file, format!("{old},{new}")).unwrap();
        tokio::time::sleep(EVERY * 5).await;
        assert_eq!(keys.get().key_ids(), vec![id(old), id(new)], "announced");
        std::fs::write(&file, "short").unwrap();
        tokio::time::sleep(EVERY * 5).await;
        assert_eq!(
            keys.get().key_ids(),
            vec![id(old), id(new)],
            "a broken file changes nothing"
        );
        std::fs::write(&file, new).unwrap();
        tokio::time::sleep(EVERY * 5).await;
        assert_eq!(keys.get().key_ids(), vec![id(new)], "the old key retired");
        task.abort();
        let _ = std::fs::remove_dir_all(dir);
    }
}

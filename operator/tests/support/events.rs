//! What a Rust participant is told: the next notice that matches, the next error, why its
//! session ended; each waited for a few seconds.

use std::time::Duration;

use treffpunkt_client::signalling::{ClientMessage, ModerationAction, ServerMessage};
use treffpunkt_client::{Participant, RoomEvent};

const WAIT: Duration = Duration::from_secs(10);

/// The next room notice that `matches`, within a few seconds.
pub async fn notice(
    participant: &mut Participant,
    matches: impl Fn(&ServerMessage) -> bool,
) -> Option<ServerMessage> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match participant.next_event(left).await? {
            RoomEvent::Notice(message) if matches(&message) => return Some(message),
            _ => continue,
        }
    }
}

/// The code of the next error `participant` is told, within a few seconds.
pub async fn error(participant: &mut Participant) -> Option<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let RoomEvent::Error { code } = participant.next_event(left).await? {
            return Some(code);
        }
    }
}

/// Why `participant`'s session ended, within a few seconds.
pub async fn closed(participant: &mut Participant) -> Option<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let RoomEvent::Closed { reason } = participant.next_event(left).await? {
            return Some(reason);
        }
    }
}

/// `by` does `action` (to `target`, for the actions on one person).
pub fn moderate(by: &Participant, action: ModerationAction, target: Option<&str>) {
    by.send(ClientMessage::Moderate {
        action,
        participant_id: target.map(str::to_owned),
    });
}

//! The task that runs the rules, apart from the poll loop.
//!
//! The poll loop publishes each round's `metrics_update` first and then hands the
//! snapshot over here through a `watch` slot, so neither the metrics nor the poll
//! cadence ever wait for a rule. Rules that are still busy when newer rounds arrive
//! skip to the newest one (skipped rounds are counted): alert state is level-based,
//! so the newest snapshot is all a rule needs. One owner, one cancellation path,
//! and a channel that holds one snapshot at most. While the rules are first being
//! compiled at start, rounds wait in the same slot: metrics are not held back.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::RuleEngine;
use crate::model::{AlertMessage, Snapshot};

/// Where the poll loop puts each round for the rules.
pub type Rounds = watch::Sender<Option<Arc<Snapshot>>>;

pub fn channel() -> (Rounds, watch::Receiver<Option<Arc<Snapshot>>>) {
    watch::channel(None)
}

/// Evaluate each new round until `shutdown`; `publish` gets each round's alerts.
/// Nothing is evaluated before the first load of the rules is done; the newest
/// round is then the first evaluated (rounds before it are not counted as skipped).
pub async fn run(
    engine: Arc<RuleEngine>,
    mut rounds: watch::Receiver<Option<Arc<Snapshot>>>,
    publish: impl Fn(Vec<AlertMessage>) + Send,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = engine.loaded() => {}
    }
    let mut last_round: Option<u64> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = rounds.changed() => if changed.is_err() { break },
        }
        let Some(snapshot) = rounds.borrow_and_update().clone() else { continue };
        if let Some(last) = last_round {
            let missed = snapshot.round.saturating_sub(last + 1);
            if missed > 0 {
                engine.note_skipped_rounds(missed);
            }
        }
        last_round = Some(snapshot.round);
        let messages = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = engine.evaluate_round(&snapshot) => m,
        };
        if !messages.is_empty() {
            publish(messages);
        }
    }
    // Rules' states that changed since they were last written.
    engine.flush_states().await;
}

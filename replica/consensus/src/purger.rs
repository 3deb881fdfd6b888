//! Purger: drops what no role needs any more. Rounds after the finalized height use the epoch
//! announced by the summary one interval before the open one, and building or validating the
//! next summary walks back to the open interval's summary; everything below that older summary
//! can go (catch-up packages move the root, and so the floor, further up).

use thicket_types::Height;

use crate::membership::{interval_length, summary_height_for_round};
use crate::pool::{Mutation, Pool};

/// A purge when the floor rose since `purged_below`, which it then records.
pub fn purge(pool: &Pool, purged_below: &mut Height) -> Vec<Mutation> {
    let open = summary_height_for_round(pool, pool.finalized_height().next());
    let below = Height(open.0.saturating_sub(interval_length(pool))).max(pool.root_height());
    if below > *purged_below {
        *purged_below = below;
        return vec![Mutation::PurgeBelow(below)];
    }
    vec![]
}

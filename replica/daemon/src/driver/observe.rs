//! What the driver reports about its replica: Prometheus metrics after every step, and the
//! admin API's status when the finalized height moves. It only reads the core's pool and the
//! state; nothing here changes what the replica does.

use std::collections::BTreeMap;
use std::time::Instant;

use thicket_consensus::StateReader;
use thicket_consensus::membership::{
    epoch_for_round, finalized_summary, interval_length, summary_height_for_round,
};
use thicket_consensus::payload::IntervalChain;
use thicket_consensus::pool::Pool;
use thicket_core::Core;
use thicket_execution::IngressStatus;
use thicket_execution::manager::StateManager;
use thicket_state::SubnetState;
use thicket_types::Height;
use thicket_types::block::{Block, Epoch, Summary};
use thicket_types::ingress::RequestId;

use crate::metrics::{MessageKind, Metrics, RejectLabels, reject_code_name};

/// Heights finalized at once beyond which a step is catching up, not timing blocks.
const MAX_TIMED_ROUNDS: u64 = 8;

/// Rounds whose start is remembered, at most (notarization runs only a little ahead of
/// finalization; a stall must not grow the map).
const MAX_OPEN_ROUNDS: usize = 1024;

pub(super) struct Observer {
    /// When the finalized height last rose.
    last_finalized: (Height, Instant),
    /// The notarized height last seen, and when each round since began (the height before it
    /// notarized): round duration and finalization latency are measured from there.
    last_notarized: Height,
    round_started: BTreeMap<Height, Instant>,
    /// The newest summary block whose DKG outcome the metrics counted.
    counted_summary: Height,
    /// Whether a finalization was seen since the start (the first one's block time would
    /// include the start-up).
    finalized_since_start: bool,
    /// The finalized height the status was last reported at.
    status_at: Option<Height>,
}

/// What the observer looks at after a step.
pub(super) struct View<'a> {
    pub core: &'a Core<super::BoxedConduct>,
    pub state: &'a StateManager<SubnetState>,
    pub metrics: &'a Metrics,
    pub syncing: bool,
    pub published: bool,
    pub peers_connected: usize,
}

impl Observer {
    /// At start: the summaries already finalized are not counted again (their counters began
    /// before the restart), but the streaks are rebuilt from them.
    pub fn new(pool: &Pool, metrics: &Metrics) -> Self {
        let finalized = pool.finalized_height();
        let o = Observer {
            last_finalized: (finalized, Instant::now()),
            last_notarized: finalized,
            round_started: BTreeMap::new(),
            counted_summary: summary_height_for_round(pool, finalized.next()),
            finalized_since_start: false,
            status_at: None,
        };
        o.recount_streaks(pool, metrics);
        o
    }

    /// Metrics on every step; the admin status (which hashes and encodes keys) only when the
    /// finalized height moved.
    pub fn after_step(&mut self, v: &View<'_>) {
        let pool = v.core.pool();
        let finalized = pool.finalized_height();
        self.time_rounds(pool, v.metrics);
        if finalized > self.last_finalized.0 {
            self.last_finalized = (finalized, Instant::now());
            self.count_summaries(pool, v.metrics);
        }
        gauges(v);
        if self.status_at != Some(finalized) {
            self.status_at = Some(finalized);
            status(v);
        }
    }

    /// Block time, round duration and finalization latency: a round starts when the height
    /// before it is notarized here, and ends when its own is notarized, then finalized.
    fn time_rounds(&mut self, pool: &Pool, m: &Metrics) {
        let now = Instant::now();
        let (notarized, finalized) = (pool.notarized_height(), pool.finalized_height());
        if notarized > self.last_notarized {
            for (_, started) in self
                .round_started
                .range(self.last_notarized.next()..=notarized)
            {
                m.round_duration
                    .observe(now.duration_since(*started).as_secs_f64());
            }
            self.round_started.entry(notarized.next()).or_insert(now);
            self.last_notarized = notarized;
        }
        if finalized > self.last_finalized.0 {
            // Heights finalized together share the time since the last one; a replica
            // catching up (many at once) or just started says nothing about the pace.
            let rounds = finalized.0 - self.last_finalized.0.0;
            let elapsed = now.duration_since(self.last_finalized.1).as_secs_f64();
            if self.finalized_since_start && rounds <= MAX_TIMED_ROUNDS {
                for _ in 0..rounds {
                    m.block_time.observe(elapsed / rounds as f64);
                }
            }
            self.finalized_since_start = true;
            let open = self.round_started.split_off(&finalized.next());
            for (_, started) in std::mem::replace(&mut self.round_started, open)
                .range(self.last_finalized.0.next()..)
            {
                m.finalization_latency
                    .observe(now.duration_since(*started).as_secs_f64());
            }
        }
        while self.round_started.len() > MAX_OPEN_ROUNDS {
            self.round_started.pop_first();
        }
    }

    /// The DKG outcome of each summary block finalized since the last count: a new epoch; a
    /// reshare when its next epoch has another membership; a failure when that epoch's keys
    /// are the current ones again (too few dealings); a registry change still waiting.
    fn count_summaries(&mut self, pool: &Pool, m: &Metrics) {
        let l = interval_length(pool);
        let newest = summary_height_for_round(pool, pool.finalized_height().next());
        let mut s = Height(self.counted_summary.0 + l);
        while s <= newest {
            if let Some(summary) = finalized_summary(pool, s) {
                m.dkg_epochs.inc();
                if summary.next.registry.version != summary.current.registry.version {
                    m.dkg_reshares.inc();
                }
                if dkg_failed(summary) {
                    m.dkg_failures.inc();
                }
                self.counted_summary = s;
            }
            s = Height(s.0 + l);
        }
        self.recount_streaks(pool, m);
    }

    /// Consecutive failed DKGs, and summaries an ordered registry change has waited, from the
    /// newest finalized summary back (as far as the pool holds them).
    fn recount_streaks(&self, pool: &Pool, m: &Metrics) {
        let l = interval_length(pool);
        let (mut failed, mut waiting) = (0i64, 0i64);
        let (mut failing, mut pending) = (true, true);
        let mut s = self.counted_summary;
        while let Some(summary) = finalized_summary(pool, s).filter(|_| s.0 > 0) {
            failing &= dkg_failed(summary);
            pending &= summary.pending.version != summary.next.registry.version;
            failed += i64::from(failing);
            waiting += i64::from(pending);
            if !(failing || pending) || s.0 < l {
                break;
            }
            s = Height(s.0 - l);
        }
        m.dkg_failed_intervals.set(failed);
        m.dkg_pending_change_epochs.set(waiting);
    }
}

/// Whether the DKG of the interval a summary closes failed: its next epoch is its current one
/// again (too few qualified dealings; keys and membership stay).
fn dkg_failed(summary: &Summary) -> bool {
    summary.next.high.transcript == summary.current.high.transcript
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn gauges(v: &View<'_>) {
    let (m, pool) = (v.metrics, v.core.pool());
    m.finalized_height.set(gauge(pool.finalized_height().0));
    m.notarized_height.set(gauge(pool.notarized_height().0));
    m.executed_height.set(gauge(v.state.executed_height().0));
    let round = pool.finalized_height().next();
    m.dkg_epoch
        .set(gauge(summary_height_for_round(pool, round).0));
    m.certification_height
        .set(gauge(v.core.certified_height().0));
    m.catch_up_height.set(gauge(pool.root_height().0));
    m.state_sync_in_progress.set(i64::from(v.syncing));
    m.ready.set(i64::from(
        crate::http::readiness(pool.finalized_height().0, v.published).is_ok(),
    ));
    m.peers_connected.set(v.peers_connected as i64);
}

/// Canister totals, registry gauges and the admin API's status snapshot.
fn status(v: &View<'_>) {
    let (m, pool) = (v.metrics, v.core.pool());
    let machine = v.state.machine();
    let canisters = machine.canisters();
    let (heap, stable) = canisters.values().fold((0usize, 0usize), |(h, s), c| {
        (h + c.memory.heap.len(), s + c.memory.stable.len())
    });
    m.canisters.set(canisters.len() as i64);
    m.canister_memory.set(heap as i64);
    m.canister_stable_memory.set(stable as i64);
    let round = pool.finalized_height().next();
    let Some(epoch) = epoch_for_round(pool, round) else {
        return;
    };
    let next = IntervalChain::finalized(pool).map(|c| c.pending_registry());
    m.registry_version.set(gauge(epoch.registry.version));
    m.subnet_members.set(epoch.registry.members.len() as i64);
    m.dkg_interval_length
        .set(gauge(epoch.registry.params.dkg_interval_length));
    m.registry_pending_version.set(gauge(
        next.as_ref().map_or(epoch.registry.version, |r| r.version),
    ));
    let Ok(mut status) = m.status.lock() else {
        return;
    };
    if let Some(next) = &next {
        status.pending_registry_version = next.version;
        status.pending_members = next.members.keys().map(|n| n.0).collect();
    }
    status.root_height = pool.root_height().0;
    status.registry_version = epoch.registry.version;
    status.members = epoch.registry.members.keys().map(|n| n.0).collect();
    status.subnet_public_key = epoch.high.coefficients().public_key().to_der();
    status.subnet_id = epoch.registry.subnet_id.to_string();
    let keys = v.core.consensus().keys();
    let holds = |e: &Epoch| keys.share(&e.low).is_some() && keys.share(&e.high).is_some();
    status.holds_current_key_shares = holds(epoch);
    status.holds_next_key_shares = finalized_summary(pool, summary_height_for_round(pool, round))
        .is_some_and(|s| holds(&s.next));
}

/// Execution metrics of a block executed near the tip (blocks replayed after a restart, or
/// executed while catching up, were counted by the subnet before).
pub(super) fn count_execution(
    m: &Metrics,
    block: &Block,
    done: &[(RequestId, IngressStatus)],
    instructions: u64,
) {
    m.block_rank.observe(block.rank.0 as f64);
    m.execution_instructions.inc_by(instructions);
    let update = MessageKind { kind: "update" };
    for (_, status) in done {
        match status {
            IngressStatus::Processing { .. } => {}
            IngressStatus::Replied { .. } => {
                m.execution_messages.get_or_create(&update).inc();
            }
            IngressStatus::Rejected { code, .. } => {
                m.execution_messages.get_or_create(&update).inc();
                m.execution_rejects
                    .get_or_create(&RejectLabels {
                        kind: "update",
                        reject_code: reject_code_name(*code),
                    })
                    .inc();
            }
        }
    }
}

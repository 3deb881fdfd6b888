//! A Byzantine replica on the real transport: `thicket-faults replica --behaviour B ...` runs
//! the daemon's own process (`thicket replica run`'s, [`thicket_replica::process`]) with the
//! simulator's Byzantine conduct in place of the honest one. It keeps its real keys, so what it
//! sends is as convincing as a malicious member's could be, and it reaches honest replicas
//! over gRPC with mutual TLS like any member.
//!
//! What it did is logged (`byzantine acts=N`) so that a run can tell that the attack really
//! happened: an equivocation, a forged signature, a withheld dealing, a burst of junk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use thicket_consensus::pool::Mutation;
use thicket_core::To;
use thicket_core::conduct::{Conduct, Context};
use thicket_replica::node::{MakeConduct, Options};
use thicket_replica::process::{self, RunSpec};
use thicket_sim::byzantine::Byzantine;
use thicket_sim::config::Behaviour;
use thicket_types::CryptoHash;
use thicket_types::artifacts::ConsensusMessage;

/// The log line a Byzantine replica writes as it acts, and the harness counts.
pub const ACTS: &str = "byzantine acts=";

/// The behaviours a replica can take on the wire: the simulator's, but `silent` (the `kill`
/// scenario's) and `mixed`.
pub const BEHAVIOURS: [Behaviour; 6] = [
    Behaviour::Equivocate,
    Behaviour::InvalidSig,
    Behaviour::BadDealing,
    Behaviour::MultiNotarize,
    Behaviour::Withhold,
    Behaviour::Flood,
];

/// The Byzantine conduct, counting (and now and then logging) what it changed of what the
/// honest roles decided.
struct Logged {
    inner: Byzantine,
    acts: Arc<AtomicU64>,
}

impl Logged {
    fn acted(&self, n: u64) {
        if n == 0 {
            return;
        }
        let before = self.acts.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        // The first act, then about every thousand.
        if before == 0 || before / 1000 != after / 1000 {
            tracing::warn!(behaviour = self.inner.0.name(), "{ACTS}{after}");
        }
    }
}

fn added(mutations: &[Mutation]) -> Vec<CryptoHash> {
    mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::AddToValidated(msg) => Some(msg.id()),
            _ => None,
        })
        .collect()
}

impl Conduct for Logged {
    fn rewrite(
        &mut self,
        cx: &Context<'_>,
        mutations: Vec<Mutation>,
    ) -> (Vec<Mutation>, Vec<(To, ConsensusMessage)>) {
        let before = added(&mutations);
        let (mutations, extra) = self.inner.rewrite(cx, mutations);
        let after = added(&mutations);
        let changed = before.iter().filter(|id| !after.contains(id)).count()
            + after.iter().filter(|id| !before.contains(id)).count()
            + extra.len();
        self.acted(changed as u64);
        (mutations, extra)
    }

    fn send(&mut self, cx: &Context<'_>, msg: ConsensusMessage) -> Vec<(To, ConsensusMessage)> {
        let id = msg.id();
        let out = self.inner.send(cx, msg);
        let honest = out.len() == 1 && matches!(out[0].0, To::All) && out[0].1.id() == id;
        if !honest {
            self.acted(out.len().max(1) as u64);
        }
        out
    }

    fn relays(&self) -> bool {
        self.inner.relays()
    }

    fn disguise(&self, cx: &Context<'_>, msg: ConsensusMessage) -> ConsensusMessage {
        self.inner.disguise(cx, msg)
    }
}

/// Runs the replica of `spec` with `behaviour` until SIGTERM.
pub fn run_replica(behaviour: Behaviour, spec: RunSpec) -> anyhow::Result<()> {
    let acts = Arc::new(AtomicU64::new(0));
    let counted = acts.clone();
    let options = Options {
        conduct: MakeConduct::new(move || {
            Box::new(Logged {
                inner: Byzantine(behaviour),
                acts: counted.clone(),
            })
        }),
        ..Options::default()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async { process::run(spec, options, process::stop_on_signal()).await })?;
    tracing::warn!(
        behaviour = behaviour.name(),
        "{ACTS}{} (stopped)",
        acts.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The last count a Byzantine replica logged in `log` (0 if it never acted).
pub fn acts_in_log(log: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| {
            let rest = &l[l.find(ACTS)? + ACTS.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

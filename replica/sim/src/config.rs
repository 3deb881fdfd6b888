//! Simulation parameters and the parsers of the command-line fault specifications.

use std::str::FromStr;

use thicket_types::registry::SubnetParams;

/// What a faulty replica does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    Honest,
    /// Crashed from the start: sends nothing.
    Silent,
    /// As block maker, proposes two different blocks per height, to different halves.
    Equivocate,
    /// Every artifact it sends carries a wrong signature or share.
    InvalidSig,
    /// Its dealings carry a wrong share for one receiver (high key) or a malformed
    /// commitment (low key).
    BadDealing,
    /// Signs notarization shares for every block at every height and finalization shares for
    /// every notarized block, ignoring the protocol's rules.
    MultiNotarize,
    /// Never lets its own DKG dealings out: not to peers, not into its blocks.
    Withhold,
    /// Sends, with each artifact it makes, a burst of shares for made-up blocks of the open
    /// heights, shares with forged signatures for the real ones, and artifacts for heights far
    /// ahead.
    Flood,
    /// Faulty replicas take the behaviours above in turn (all but `withhold` and `flood`).
    Mixed,
}

impl Behaviour {
    pub const FAULTY: [Behaviour; 5] = [
        Behaviour::Silent,
        Behaviour::Equivocate,
        Behaviour::InvalidSig,
        Behaviour::BadDealing,
        Behaviour::MultiNotarize,
    ];

    pub const ALL: [Behaviour; 9] = [
        Behaviour::Honest,
        Behaviour::Silent,
        Behaviour::Equivocate,
        Behaviour::InvalidSig,
        Behaviour::BadDealing,
        Behaviour::MultiNotarize,
        Behaviour::Withhold,
        Behaviour::Flood,
        Behaviour::Mixed,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Honest => "honest",
            Behaviour::Silent => "silent",
            Behaviour::Equivocate => "equivocate",
            Behaviour::InvalidSig => "invalid-sig",
            Behaviour::BadDealing => "bad-dealing",
            Behaviour::MultiNotarize => "multi-notarize",
            Behaviour::Withhold => "withhold",
            Behaviour::Flood => "flood",
            Behaviour::Mixed => "mixed",
        }
    }

    /// The behaviour of the `i`-th faulty replica.
    pub fn for_faulty(self, i: usize) -> Behaviour {
        match self {
            Behaviour::Mixed => Self::FAULTY[i % Self::FAULTY.len()],
            b => b,
        }
    }
}

impl FromStr for Behaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Behaviour::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Behaviour::ALL.iter().map(|b| b.name()).collect();
                format!(
                    "unknown behaviour {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A network partition: from `start_ms` for `duration_ms`, replicas are split into `groups`
/// (by position, round-robin), and messages between groups are lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Partition {
    pub start_ms: u64,
    pub duration_ms: u64,
    pub groups: usize,
}

impl Partition {
    pub fn active(&self, now: u64) -> bool {
        now >= self.start_ms && now < self.start_ms + self.duration_ms
    }
    pub fn end(&self) -> u64 {
        self.start_ms + self.duration_ms
    }
}

/// `START_MS+DURATION_MS[/GROUPS]`, comma-separated, e.g. `3000+8000` or `2000+5000/3`.
pub fn parse_partitions(spec: &str) -> Result<Vec<Partition>, String> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|p| {
            let bad = || format!("bad partition {p:?}: expected START_MS+DURATION_MS[/GROUPS]");
            let (window, groups) = match p.trim().split_once('/') {
                Some((w, g)) => (w, g.parse::<usize>().map_err(|_| bad())?),
                None => (p.trim(), 2),
            };
            let (start, dur) = window.split_once('+').ok_or_else(bad)?;
            let part = Partition {
                start_ms: start.parse().map_err(|_| bad())?,
                duration_ms: dur.parse().map_err(|_| bad())?,
                groups,
            };
            if part.groups < 2 {
                return Err(format!("partition {p:?} needs at least 2 groups"));
            }
            Ok(part)
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Add,
    Remove,
}

/// A membership change submitted once the subnet has finalized `at_height` (and the previous
/// change was ordered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MembershipChange {
    pub kind: ChangeKind,
    pub at_height: u64,
}

/// `add@H` / `remove@H`, comma-separated, e.g. `add@10,add@30,add@30,remove@60`.
pub fn parse_changes(spec: &str) -> Result<Vec<MembershipChange>, String> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|c| {
            let bad =
                || format!("bad membership change {c:?}: expected add@HEIGHT or remove@HEIGHT");
            let (kind, h) = c.trim().split_once('@').ok_or_else(bad)?;
            let kind = match kind {
                "add" => ChangeKind::Add,
                "remove" => ChangeKind::Remove,
                _ => return Err(bad()),
            };
            Ok(MembershipChange {
                kind,
                at_height: h.parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

/// A replica that crashes at `at_ms` and restarts `down_ms` later; with `wipe` it loses its
/// artifact pool and must catch up from a CUP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Crash {
    pub node: usize,
    pub at_ms: u64,
    pub down_ms: u64,
    pub wipe: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SimConfig {
    pub nodes: usize,
    pub faulty: usize,
    pub behaviour: Behaviour,
    /// Stop when every honest member finalized this height.
    pub heights: u64,
    pub seed: u64,
    pub partitions: Vec<Partition>,
    pub changes: Vec<MembershipChange>,
    pub crashes: Vec<Crash>,
    #[serde(skip)]
    pub params: SubnetParams,
    pub min_latency_ms: u64,
    pub max_latency_ms: u64,
    /// Probability that any one message is lost.
    pub drop_rate: f64,
    /// How often replicas re-send what a peer may have missed.
    pub retransmit_ms: u64,
    /// No new finalization for this long (with the network whole) is a liveness failure.
    pub stall_ms: u64,
    /// Ingress messages submitted per virtual second, spread over the replicas.
    pub ingress_per_sec: u64,
}

impl SimConfig {
    pub fn new(nodes: usize, heights: u64, seed: u64) -> Self {
        SimConfig {
            nodes,
            faulty: 0,
            behaviour: Behaviour::Honest,
            heights,
            seed,
            partitions: vec![],
            changes: vec![],
            crashes: vec![],
            params: default_params(),
            min_latency_ms: 5,
            max_latency_ms: 60,
            drop_rate: 0.0,
            retransmit_ms: 1000,
            stall_ms: 30_000,
            ingress_per_sec: 20,
        }
    }
}

impl SimConfig {
    /// The fault campaign's run for `seed`: one Byzantine behaviour per seed in turn (mixed
    /// included), one partition into two or three groups, and one replica crashed and restarted
    /// with its disk kept or wiped, at times drawn from the seed. A replica that lost its store
    /// but kept its keys cannot know what it signed just before: it counts as one of the f
    /// faulty replicas, so a run has f Byzantine replicas with a disk kept, f − 1 with a disk
    /// wiped (the core's [`thicket_core::Core::recovering`] keeps it from signing against
    /// itself where it can tell). Every run crosses a DKG interval, so wiped replicas restart
    /// from a catch-up package when one exists.
    pub fn campaign(nodes: usize, heights: u64, seed: u64) -> Self {
        use rand::Rng;
        use rand_core::SeedableRng;
        const BEHAVIOURS: [Behaviour; 6] = [
            Behaviour::Equivocate,
            Behaviour::InvalidSig,
            Behaviour::BadDealing,
            Behaviour::MultiNotarize,
            Behaviour::Silent,
            Behaviour::Mixed,
        ];
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed ^ 0xC0FF_EE00);
        let mut c = SimConfig::new(nodes, heights, seed);
        c.behaviour = BEHAVIOURS[(seed % BEHAVIOURS.len() as u64) as usize];
        c.partitions = vec![Partition {
            start_ms: rng.gen_range(1_000..6_000),
            duration_ms: rng.gen_range(500..4_000),
            groups: rng.gen_range(2..=3),
        }];
        c.crashes = vec![Crash {
            node: rng.gen_range(0..nodes),
            at_ms: rng.gen_range(1_000..8_000),
            down_ms: rng.gen_range(500..4_000),
            wipe: rng.gen_bool(0.5),
        }];
        let wiped = usize::from(c.crashes.iter().any(|c| c.wipe));
        c.faulty = ((nodes - 1) / 3).saturating_sub(wiped);
        if c.faulty == 0 {
            c.behaviour = Behaviour::Honest;
        }
        c
    }
}

/// IC application-subnet timing (unit delay 1 s, initial notary delay 300 ms) with a short DKG
/// interval, so that a simulation of a few dozen heights crosses several intervals.
pub fn default_params() -> SubnetParams {
    SubnetParams {
        unit_delay_ms: 1000,
        initial_notary_delay_ms: 300,
        dkg_interval_length: 10,
        dkg_dealings_per_block: 64,
        max_ingress_per_block: 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_reject_garbage() {
        assert_eq!(
            parse_partitions("3000+8000,1+2/3").unwrap(),
            vec![
                Partition {
                    start_ms: 3000,
                    duration_ms: 8000,
                    groups: 2
                },
                Partition {
                    start_ms: 1,
                    duration_ms: 2,
                    groups: 3
                }
            ]
        );
        assert!(parse_partitions("3000").is_err());
        assert!(parse_partitions("1+2/1").is_err());
        assert_eq!(parse_changes("add@3,remove@9").unwrap().len(), 2);
        assert!(parse_changes("grow@3").is_err());
        assert_eq!("mixed".parse::<Behaviour>(), Ok(Behaviour::Mixed));
        assert!("evil".parse::<Behaviour>().is_err());
    }
}

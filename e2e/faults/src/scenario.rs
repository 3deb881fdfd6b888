//! The faults of each scenario, drawn from the run's seed: which replicas, how long, how hard.
//! Every scenario repeats its fault (with pauses between) until the fault phase ends; the run
//! then heals everything at once.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::Faults;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// No fault (a baseline, or the setting of a Byzantine member's attack); not among
    /// [`Scenario::all`].
    None,
    /// One replica cut off from the others (both ways), then another.
    Isolate,
    /// One replica's packets to the others dropped, theirs to it not (or the reverse).
    OneWay,
    /// The replica that made the newest rank-0 block, cut off again and again.
    BlockMaker,
    /// The subnet split in halves: no side has a quorum, so nothing is finalized until healed.
    Halves,
    /// 5–30% of all replica-to-replica packets dropped.
    Loss,
    /// 50–400 ms delay with jitter on every link, or a second on one replica's links.
    Delay,
    /// kill -9 of a replica at a random moment (sometimes two), restarted 2 s later.
    Kill,
    /// SIGSTOP of a replica for 3–20 s.
    Pause,
    /// A replica's clock 5–120 s ahead or behind (sometimes two replicas').
    ClockSkew,
    /// A replica's disk filled to the last byte for 10–30 s.
    DiskFull,
    /// Any of the above, one after another.
    Mixed,
}

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        use clap::ValueEnum;
        Scenario::value_variants()
            .iter()
            .copied()
            .filter(|s| *s != Scenario::None)
            .collect()
    }

    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Whether its replicas run under libfaketime.
    pub fn skews_clocks(self) -> bool {
        matches!(self, Scenario::ClockSkew | Scenario::Mixed)
    }
}

fn secs(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.gen_range(lo * 1000..=hi * 1000))
}

/// Injects `scenario`'s faults until `until` (time since the fault phase began); returns a
/// line per fault, for the report.
pub async fn inject(
    scenario: Scenario,
    f: &mut Faults<'_>,
    rng: &mut ChaCha8Rng,
    until: Duration,
) -> anyhow::Result<Vec<String>> {
    let mut log = Vec::new();
    if scenario == Scenario::None {
        f.wait(until).await?;
        return Ok(log);
    }
    let start = tokio::time::Instant::now();
    let n = f.n();
    while start.elapsed() < until {
        let left = until.saturating_sub(start.elapsed());
        let kind = match scenario {
            Scenario::Mixed => {
                let all = Scenario::all();
                all[rng.gen_range(0..all.len() - 1)]
            }
            s => s,
        };
        let i = rng.gen_range(0..n);
        let hold = secs(rng, 8, 25).min(left);
        let at = start.elapsed().as_secs();
        let what = match kind {
            Scenario::Isolate => {
                f.net.isolate(i)?;
                format!("isolate {i}")
            }
            Scenario::OneWay => {
                let outgoing = rng.gen_bool(0.5);
                for j in (0..n).filter(|j| *j != i) {
                    if outgoing {
                        f.net.cut(i, j)?;
                    } else {
                        f.net.cut(j, i)?;
                    }
                }
                format!("drop {} replica {i}", if outgoing { "from" } else { "to" })
            }
            Scenario::BlockMaker => {
                // The maker of the newest rank-0 block, cut off for a few rounds at a time.
                let mut cut = Vec::new();
                let stop = start.elapsed() + hold;
                while start.elapsed() < stop {
                    let maker = f.newest_rank0_maker().unwrap_or(i);
                    f.net.heal()?;
                    f.net.isolate(maker)?;
                    cut.push(maker.to_string());
                    f.wait(secs(rng, 2, 5)).await?;
                }
                f.net.heal()?;
                log.push(format!("{at}s: isolate the block maker: {}", cut.join(",")));
                f.wait(secs(rng, 3, 8).min(until.saturating_sub(start.elapsed())))
                    .await?;
                continue;
            }
            Scenario::Halves => {
                let mut side: Vec<bool> = (0..n).map(|k| k < n / 2).collect();
                side.rotate_left(i);
                for a in 0..n {
                    for b in (0..n).filter(|b| side[*b] != side[a]) {
                        f.net.cut(a, b)?;
                    }
                }
                let left: Vec<usize> = (0..n).filter(|k| side[*k]).collect();
                format!("split {left:?} from the rest")
            }
            Scenario::Loss => {
                let p = rng.gen_range(0.05..0.30);
                for k in 0..n {
                    f.net.loss(k, p)?;
                }
                format!("drop {:.0}% of packets", p * 100.0)
            }
            Scenario::Delay => {
                if rng.gen_bool(0.3) {
                    for j in (0..n).filter(|j| *j != i) {
                        f.relay.set(i, j, 1000, 200);
                        f.relay.set(j, i, 1000, 200);
                    }
                    format!("delay replica {i}'s links by 1000±200 ms")
                } else {
                    let d = rng.gen_range(50..=400);
                    for a in 0..n {
                        for b in (0..n).filter(|b| *b != a) {
                            f.relay.set(a, b, d, d / 2);
                        }
                    }
                    format!("delay every link by {d}+{} ms", d / 2)
                }
            }
            Scenario::Kill => {
                let mut killed = vec![i];
                if rng.gen_bool(0.2) {
                    killed.push((i + 1 + rng.gen_range(0..n - 1)) % n);
                }
                // Killed at a random moment of the hold, not at its start.
                f.wait(secs(rng, 0, 3)).await?;
                for k in &killed {
                    f.subnet.kill(*k)?;
                }
                format!("kill -9 {killed:?}")
            }
            Scenario::Pause => {
                f.subnet.pause(i)?;
                format!("SIGSTOP {i}")
            }
            Scenario::ClockSkew => {
                let mut skewed = vec![i];
                if rng.gen_bool(0.3) {
                    skewed.push((i + 1 + rng.gen_range(0..n - 1)) % n);
                }
                let mut what = Vec::new();
                for k in skewed {
                    let by: i64 = rng.gen_range(5..=120) * if rng.gen_bool(0.5) { 1 } else { -1 };
                    f.subnet.skew(k, by)?;
                    what.push(format!("{k} by {by:+}s"));
                }
                format!("skew the clock of {}", what.join(", "))
            }
            Scenario::DiskFull => {
                f.subnet.fill_disk(i)?;
                format!("fill the disk of {i}")
            }
            Scenario::Mixed | Scenario::None => unreachable!("Mixed picks a scenario with faults"),
        };
        log.push(format!("{at}s: {what} for {}s", hold.as_secs()));
        f.wait(hold).await?;
        f.heal()?;
        f.wait(secs(rng, 3, 10).min(until.saturating_sub(start.elapsed())))
            .await?;
    }
    Ok(log)
}

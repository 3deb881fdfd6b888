//! Canister settings as `create_canister` and `update_settings` give them (checked against
//! the IC's bounds), and the status `canister_status` reports.

use candid::Principal;

use super::*;
use crate::canister::{Canister, MAX_LOG_MEMORY_LIMIT, Settings, Status, Visibility};
use crate::limits::{MAX_CONTROLLERS, MAX_ENV_VAR_BYTES, MAX_ENV_VARS};
use crate::reject::Reject;

pub(super) fn apply_settings(c: &mut Canister, s: &CanisterSettings) -> Result<(), Reject> {
    if let Some(list) = &s.controllers {
        if list.len() > MAX_CONTROLLERS {
            return Err(Reject::new(
                408,
                format!(
                    "A canister has at most {MAX_CONTROLLERS} controllers, not {}",
                    list.len()
                ),
            ));
        }
        c.controllers = list.iter().copied().collect();
    }
    let big = |what: &str| Reject::new(408, format!("{what} is out of range"));
    let mut next: Settings = c.settings.clone();
    if let Some(n) = &s.compute_allocation {
        next.compute_allocation = nat_u64(n)
            .filter(|v| *v <= 100)
            .ok_or_else(|| big("compute_allocation"))?;
    }
    if let Some(n) = &s.memory_allocation {
        next.memory_allocation = nat_u64(n).ok_or_else(|| big("memory_allocation"))?;
    }
    if let Some(n) = &s.freezing_threshold {
        next.freezing_threshold = nat_u64(n).ok_or_else(|| big("freezing_threshold"))?;
    }
    if let Some(n) = &s.reserved_cycles_limit {
        next.reserved_cycles_limit = nat_u128(n).ok_or_else(|| big("reserved_cycles_limit"))?;
    }
    if let Some(n) = &s.wasm_memory_limit {
        next.wasm_memory_limit = nat_u64(n).ok_or_else(|| big("wasm_memory_limit"))?;
    }
    if let Some(n) = &s.wasm_memory_threshold {
        next.wasm_memory_threshold = nat_u64(n).ok_or_else(|| big("wasm_memory_threshold"))?;
    }
    let mut extra = c.extra.clone();
    if let Some(v) = &s.log_visibility {
        extra.log_visibility = match v {
            LogVisibility::Controllers => Visibility::Controllers,
            LogVisibility::Public => Visibility::Public,
            LogVisibility::AllowedViewers(list) => viewers("log_visibility", list)?,
        };
    }
    if let Some(v) = &s.status_visibility {
        extra.status_visibility = match v {
            StatusVisibility::Controllers => Visibility::Controllers,
            StatusVisibility::Public => Visibility::Public,
            StatusVisibility::AllowedViewers(list) => viewers("status_visibility", list)?,
        };
    }
    if let Some(v) = &s.snapshot_visibility {
        extra.snapshot_visibility = match v {
            SnapshotVisibility::Controllers => Visibility::Controllers,
            SnapshotVisibility::Public => Visibility::Public,
            SnapshotVisibility::AllowedViewers(list) => viewers("snapshot_visibility", list)?,
        };
    }
    if let Some(vars) = &s.environment_variables {
        extra.env_vars = environment_variables(vars)?;
    }
    if let Some(n) = &s.log_memory_limit {
        extra.log_memory_limit = nat_u64(n)
            .filter(|v| *v <= MAX_LOG_MEMORY_LIMIT)
            .ok_or_else(|| {
                Reject::new(
                    408,
                    format!("log_memory_limit is at most {MAX_LOG_MEMORY_LIMIT} bytes"),
                )
            })?;
        extra.log.fit(extra.log_memory_limit);
    }
    // Settings of the current interface this replica does not keep yet: their defaults are
    // accepted (tools send them), anything else refused rather than dropped.
    let unsupported = |what: &str| {
        Reject::new(
            408,
            format!("the setting {what} is not supported on this replica yet (only its default)"),
        )
    };
    if s.minimum_incoming_canister_call_cycles
        .as_ref()
        .is_some_and(|n| *n != 0u64)
    {
        return Err(unsupported("minimum_incoming_canister_call_cycles"));
    }
    c.extra = extra;
    c.settings = next;
    Ok(())
}

/// A canister's environment variables, within the IC's bounds (20 of them, names and values of
/// 128 bytes at most, each name once).
fn environment_variables(
    vars: &[EnvironmentVariable],
) -> Result<std::collections::BTreeMap<String, String>, Reject> {
    let bad = |why: String| Reject::new(408, format!("environment_variables: {why}"));
    if vars.len() > MAX_ENV_VARS {
        return Err(bad(format!(
            "{} variables, at most {MAX_ENV_VARS} are allowed",
            vars.len()
        )));
    }
    let mut out = std::collections::BTreeMap::new();
    for v in vars {
        if v.name.len() > MAX_ENV_VAR_BYTES || v.value.len() > MAX_ENV_VAR_BYTES {
            return Err(bad(format!(
                "{:?}: names and values have at most {MAX_ENV_VAR_BYTES} bytes",
                v.name
            )));
        }
        if out.insert(v.name.clone(), v.value.clone()).is_some() {
            return Err(bad(format!("{:?} is set twice", v.name)));
        }
    }
    Ok(out)
}

/// An allowed-viewers list, within the IC's bound.
fn viewers(what: &str, list: &[Principal]) -> Result<Visibility, Reject> {
    if list.len() > MAX_CONTROLLERS {
        return Err(Reject::new(
            408,
            format!(
                "{what} allows at most {MAX_CONTROLLERS} viewers, not {}",
                list.len()
            ),
        ));
    }
    Ok(Visibility::AllowedViewers(list.to_vec()))
}

fn log_visibility(v: &Visibility) -> LogVisibility {
    match v {
        Visibility::Controllers => LogVisibility::Controllers,
        Visibility::Public => LogVisibility::Public,
        Visibility::AllowedViewers(l) => LogVisibility::AllowedViewers(l.clone()),
    }
}

fn status_visibility(v: &Visibility) -> StatusVisibility {
    match v {
        Visibility::Controllers => StatusVisibility::Controllers,
        Visibility::Public => StatusVisibility::Public,
        Visibility::AllowedViewers(l) => StatusVisibility::AllowedViewers(l.clone()),
    }
}

fn snapshot_visibility(v: &Visibility) -> SnapshotVisibility {
    match v {
        Visibility::Controllers => SnapshotVisibility::Controllers,
        Visibility::Public => SnapshotVisibility::Public,
        Visibility::AllowedViewers(l) => SnapshotVisibility::AllowedViewers(l.clone()),
    }
}

/// What a canister's history takes: its changes as Candid encodes them.
fn history_bytes(c: &Canister) -> u64 {
    let changes: Vec<&Change> = c.extra.history.changes.iter().collect();
    candid::encode_one(&changes).map_or(0, |b| b.len() as u64)
}

pub(super) fn status_of(c: &Canister) -> CanisterStatusResult {
    let s = &c.settings;
    let heap = c.memory.heap.len() as u64;
    let stable = c.memory.stable.len() as u64;
    // Exported mutable globals, 8 bytes each at most (i32, i64, f32, f64).
    let globals = 8 * c.memory.globals.len() as u64;
    let binary = c.module.as_ref().map_or(0, |m| m.wasm.len() as u64);
    let logs = c.extra.log.bytes;
    let chunks: u64 = c.extra.chunks.values().map(|p| p.len() as u64).sum();
    let snapshots: u64 = c.extra.snapshots.values().map(|s| s.size()).sum();
    let sections: u64 = c.module.as_ref().map_or(0, |m| {
        m.metadata()
            .iter()
            .map(|md| (md.name.len() + md.content.len()) as u64)
            .sum()
    });
    CanisterStatusResult {
        status: match c.status {
            Status::Running => CanisterStatusType::Running,
            Status::Stopping => CanisterStatusType::Stopping,
            Status::Stopped => CanisterStatusType::Stopped,
        },
        // Canisters do not migrate between subnets here.
        ready_for_migration: false,
        version: c.version,
        settings: DefiniteCanisterSettings {
            controllers: c.controllers.iter().copied().collect(),
            compute_allocation: s.compute_allocation.into(),
            memory_allocation: s.memory_allocation.into(),
            freezing_threshold: s.freezing_threshold.into(),
            reserved_cycles_limit: s.reserved_cycles_limit.into(),
            minimum_incoming_canister_call_cycles: 0u64.into(),
            log_visibility: log_visibility(&c.extra.log_visibility),
            log_memory_limit: c.extra.log_memory_limit.into(),
            snapshot_visibility: snapshot_visibility(&c.extra.snapshot_visibility),
            status_visibility: status_visibility(&c.extra.status_visibility),
            wasm_memory_limit: s.wasm_memory_limit.into(),
            wasm_memory_threshold: s.wasm_memory_threshold.into(),
            environment_variables: c
                .extra
                .env_vars
                .iter()
                .map(|(name, value)| EnvironmentVariable {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        },
        module_hash: c.module.as_ref().map(|m| m.hash.to_vec()),
        memory_size: (heap + stable + globals + binary + sections + logs + chunks + snapshots)
            .into(),
        memory_metrics: MemoryMetrics {
            wasm_memory_size: heap.into(),
            stable_memory_size: stable.into(),
            global_memory_size: globals.into(),
            wasm_binary_size: binary.into(),
            custom_sections_size: sections.into(),
            canister_history_size: history_bytes(c).into(),
            wasm_chunk_store_size: chunks.into(),
            snapshots_size: snapshots.into(),
            log_memory_store_size: c.extra.log.bytes.into(),
        },
        cycles: c.cycles.into(),
        reserved_cycles: 0u64.into(),
        idle_cycles_burned_per_day: 0u64.into(),
        query_stats: QueryStats {
            num_calls_total: 0u64.into(),
            num_instructions_total: 0u64.into(),
            request_payload_bytes_total: 0u64.into(),
            response_payload_bytes_total: 0u64.into(),
        },
    }
}

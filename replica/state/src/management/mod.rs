//! The management canister (`aaaaa-aa`): creates, installs, upgrades, starts, stops and
//! deletes canisters for their controllers, reports their status and changes their settings.
//! Its Candid types are in [`types`]; installing code is in `install.rs`.
//!
//! A call to it runs as part of the batch, like any other message; a failed call changes
//! nothing and answers with the IC's reject code.

mod chunks;
mod history;
mod install;
mod queries;
pub mod types;

pub use chunks::{InstallChunkedCodeArgs, MAX_CHUNK_BYTES, MAX_STORED_CHUNKS};
pub use queries::query_target;

pub use types::*;

use std::collections::BTreeSet;
use std::sync::Arc;

use candid::{CandidType, Deserialize, Principal};
use thicket_canister::Runtime;

use crate::canister::{Canister, MAX_LOG_MEMORY_LIMIT, Settings, Status, Visibility};
use crate::ids::{USER_RANGE, canister_id, in_range};
use crate::limits::{
    CREATE_CANISTER_FEE, DEFAULT_PROVISIONAL_CYCLES, MAX_CANISTERS, MAX_CONTROLLERS,
    MAX_ENV_VAR_BYTES, MAX_ENV_VARS, MAX_STOP_WAITERS, decode_argument,
};
use crate::messages::Origin;
use crate::reject::Reject;
use crate::state::SubnetState;

fn encode<T: CandidType>(v: &T) -> Result<Vec<u8>, Reject> {
    candid::encode_one(v).map_err(|e| Reject::new(503, format!("encoding the reply: {e}")))
}

fn decode<'a, T: CandidType + Deserialize<'a>>(method: &str, arg: &'a [u8]) -> Result<T, Reject> {
    decode_argument(arg).map_err(|e| {
        Reject::new(
            408,
            format!("Error decoding the argument of {method} for the management canister: {e}"),
        )
    })
}

impl SubnetState {
    /// A call to the management canister from `caller`, answered to `origin`. Stopping a
    /// canister with open call contexts answers once they have closed; cycles attached to a
    /// call are refunded, except those `create_canister` gives the new canister.
    pub(crate) fn manage(
        &mut self,
        rt: &Runtime,
        origin: Origin,
        caller: &Principal,
        method: &str,
        arg: &[u8],
        cycles: u128,
    ) {
        let result = match method {
            "stop_canister" => {
                let stopped = decode::<CanisterIdRecord>(method, arg).and_then(|a| {
                    let own = *caller == a.canister_id;
                    let c = self.controlled(&a.canister_id, caller)?;
                    if c.call_contexts.is_empty() {
                        c.status = Status::Stopped;
                        Ok(true)
                    } else if own {
                        // Its own call context would wait for itself forever.
                        Err(Reject::new(
                            510,
                            format!(
                                "Canister {} cannot stop itself while it has open calls",
                                a.canister_id
                            ),
                        ))
                    } else if c.stop_waiters.len() >= MAX_STOP_WAITERS {
                        Err(Reject::new(
                            509,
                            format!("Canister {} is stopping", a.canister_id),
                        ))
                    } else {
                        c.status = Status::Stopping;
                        c.stop_waiters.push((origin.clone(), cycles));
                        Ok(false)
                    }
                });
                match stopped {
                    Ok(false) => return,
                    Ok(true) => Ok(EMPTY_REPLY.to_vec()),
                    Err(r) => Err(r),
                }
            }
            "start_canister" => {
                let waiters = decode::<CanisterIdRecord>(method, arg).and_then(|a| {
                    let c = self.controlled(&a.canister_id, caller)?;
                    c.status = Status::Running;
                    Ok((a.canister_id, std::mem::take(&mut c.stop_waiters)))
                });
                match waiters {
                    Ok((id, waiters)) => {
                        for (w, refund) in waiters {
                            let r = Reject::new(
                                511,
                                format!("Canister {id} was started before it stopped"),
                            );
                            self.respond(w, Err(r), refund);
                        }
                        Ok(EMPTY_REPLY.to_vec())
                    }
                    Err(r) => Err(r),
                }
            }
            "create_canister" if matches!(origin, Origin::Canister { .. }) => {
                let a: Result<CreateCanisterArgs, _> = decode(method, arg);
                let fee = CREATE_CANISTER_FEE;
                let created = a.and_then(|a| {
                    if cycles < fee {
                        return Err(Reject::new(
                            520,
                            format!(
                                "create_canister needs at least {fee} cycles attached, got {cycles}"
                            ),
                        ));
                    }
                    let by = self.change_origin(&origin, caller);
                    self.create(
                        caller,
                        &by,
                        ProvisionalCreateCanisterArgs {
                            amount: Some((cycles - fee).into()),
                            settings: a.settings,
                            specified_id: None,
                        },
                    )
                });
                match created {
                    Ok(id) => {
                        let reply = encode(&CanisterIdRecord { canister_id: id });
                        self.respond(origin, reply, 0);
                        return;
                    }
                    Err(r) => Err(r),
                }
            }
            "canister_info" if matches!(origin, Origin::Canister { .. }) => self.canister_info(arg),
            _ => {
                let by = self.change_origin(&origin, caller);
                self.management(rt, caller, &by, method, arg)
            }
        };
        self.respond(origin, result, cycles);
    }

    /// A call to the management canister.
    fn management(
        &mut self,
        rt: &Runtime,
        caller: &Principal,
        by: &ChangeOrigin,
        method: &str,
        arg: &[u8],
    ) -> Result<Vec<u8>, Reject> {
        let now = self.time_ns;
        match method {
            "provisional_create_canister_with_cycles" => {
                let a: ProvisionalCreateCanisterArgs = decode(method, arg)?;
                let id = self.create(caller, by, a)?;
                encode(&CanisterIdRecord { canister_id: id })
            }
            "provisional_top_up_canister" => {
                let a: ProvisionalTopUpArgs = decode(method, arg)?;
                let amount = nat_u128(&a.amount)
                    .ok_or_else(|| Reject::new(408, "amount does not fit in 128 bits"))?;
                let c = self.canisters.get_mut(&a.canister_id).ok_or_else(|| {
                    Reject::new(301, format!("Canister {} not found", a.canister_id))
                })?;
                c.cycles = c.cycles.saturating_add(amount);
                encode(&())
            }
            "canister_info" => Err(Reject::new(
                407,
                "canister_info can only be called by canisters",
            )),
            "create_canister" => Err(Reject::new(
                407,
                "create_canister can only be called by canisters (it needs attached cycles); \
                 use provisional_create_canister_with_cycles",
            )),
            "install_code" => {
                let a: InstallCodeArgs = decode(method, arg)?;
                self.install_code(rt, caller, by, a)?;
                encode(&())
            }
            "upload_chunk" => {
                let a: UploadChunkArgs = decode(method, arg)?;
                encode(&self.upload_chunk(caller, a)?)
            }
            "stored_chunks" => {
                let a: CanisterIdRecord = decode(method, arg)?;
                encode(&self.stored_chunks(caller, a)?)
            }
            "clear_chunk_store" => {
                let a: CanisterIdRecord = decode(method, arg)?;
                self.clear_chunk_store(caller, a)?;
                encode(&())
            }
            "install_chunked_code" => {
                let a: InstallChunkedCodeArgs = decode(method, arg)?;
                self.install_chunked_code(rt, caller, by, a)?;
                encode(&())
            }
            "uninstall_code" => {
                let a: CanisterIdRecord = decode(method, arg)?;
                let c = self.controlled(&a.canister_id, caller)?;
                c.module = None;
                c.memory = Arc::default();
                c.certified_data.clear();
                c.extra.log.purge();
                c.extra.chunks.clear();
                c.global_timer = 0;
                c.version += 1;
                c.record(now, by.clone(), ChangeDetails::CodeUninstall);
                self.reset_calls(&a.canister_id);
                encode(&())
            }
            "delete_canister" => {
                let a: CanisterIdRecord = decode(method, arg)?;
                let c = self.controlled(&a.canister_id, caller)?;
                if c.status != Status::Stopped {
                    return Err(Reject::new(
                        510,
                        format!(
                            "Canister {} must be stopped before it is deleted",
                            a.canister_id
                        ),
                    ));
                }
                self.canisters.remove(&a.canister_id);
                encode(&())
            }
            "update_settings" => {
                let a: UpdateSettingsArgs = decode(method, arg)?;
                let c = self.controlled(&a.canister_id, caller)?;
                let mut next = c.clone();
                apply_settings(&mut next, &a.settings)?;
                next.version += 1;
                if next.controllers != c.controllers {
                    let controllers = next.controllers.iter().copied().collect();
                    let change = ControllersChangeRecord { controllers };
                    next.record(now, by.clone(), ChangeDetails::ControllersChange(change));
                }
                *c = next;
                encode(&())
            }
            "fetch_canister_logs" => queries::fetch(&self.canisters, caller, arg),
            "canister_status" => {
                let a: CanisterIdRecord = decode(method, arg)?;
                queries::status(&self.canisters, caller, &a.canister_id)
            }
            _ => Err(Reject::new(
                407,
                format!("The management canister has no method '{method}' on this replica"),
            )),
        }
    }

    /// The canister `id`, if `caller` controls it.
    fn controlled(&mut self, id: &Principal, caller: &Principal) -> Result<&mut Canister, Reject> {
        let c = self
            .canisters
            .get_mut(id)
            .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))?;
        if !c.controllers.contains(caller) {
            return Err(not_controller(id, c, caller));
        }
        Ok(c)
    }

    pub(crate) fn create(
        &mut self,
        caller: &Principal,
        by: &ChangeOrigin,
        a: ProvisionalCreateCanisterArgs,
    ) -> Result<Principal, Reject> {
        if self.canisters.len() >= MAX_CANISTERS {
            return Err(Reject::new(
                102,
                format!("The subnet holds its maximum of {MAX_CANISTERS} canisters"),
            ));
        }
        let id = match a.specified_id {
            Some(id) => {
                if !in_range(&id) {
                    return Err(Reject::new(
                        405,
                        format!("Canister id {id} is not in this subnet's canister range"),
                    ));
                }
                if self.canisters.contains_key(&id) {
                    return Err(Reject::new(205, format!("Canister {id} already exists")));
                }
                id
            }
            None => loop {
                // States from before the user range began below it.
                self.next_index = self.next_index.max(USER_RANGE.0);
                if self.next_index > USER_RANGE.1 {
                    return Err(Reject::new(102, "The subnet's canister range is exhausted"));
                }
                let id = canister_id(self.next_index);
                self.next_index += 1;
                if !self.canisters.contains_key(&id) {
                    break id;
                }
            },
        };
        let cycles = match &a.amount {
            Some(n) => {
                nat_u128(n).ok_or_else(|| Reject::new(408, "amount does not fit in 128 bits"))?
            }
            None => DEFAULT_PROVISIONAL_CYCLES,
        };
        let mut c = Canister::new(BTreeSet::from([*caller]), cycles, self.time_ns);
        if let Some(s) = &a.settings {
            apply_settings(&mut c, s)?;
        }
        let controllers = c.controllers.iter().copied().collect();
        let creation = CreationRecord {
            controllers,
            environment_variables_hash: None,
        };
        c.record(self.time_ns, by.clone(), ChangeDetails::Creation(creation));
        self.canisters.insert(id, c);
        Ok(id)
    }
}

fn apply_settings(c: &mut Canister, s: &CanisterSettings) -> Result<(), Reject> {
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
    if s.snapshot_visibility
        .as_ref()
        .is_some_and(|v| *v != SnapshotVisibility::Controllers)
    {
        return Err(unsupported("snapshot_visibility"));
    }
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

/// The reject of `caller`, who does not control canister `id`.
fn not_controller(id: &Principal, c: &Canister, caller: &Principal) -> Reject {
    let list: Vec<String> = c.controllers.iter().map(Principal::to_text).collect();
    Reject::new(
        512,
        format!(
            "Only the controllers of the canister {id} can control it. \
             Canister's controllers: {}. Sender's id: {caller}",
            list.join(" ")
        ),
    )
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

/// What a canister's history takes: its changes as Candid encodes them.
fn history_bytes(c: &Canister) -> u64 {
    let changes: Vec<&Change> = c.extra.history.changes.iter().collect();
    candid::encode_one(&changes).map_or(0, |b| b.len() as u64)
}

fn status_of(c: &Canister) -> CanisterStatusResult {
    let s = &c.settings;
    let heap = c.memory.heap.len() as u64;
    let stable = c.memory.stable.len() as u64;
    // Exported mutable globals, 8 bytes each at most (i32, i64, f32, f64).
    let globals = 8 * c.memory.globals.len() as u64;
    let binary = c.module.as_ref().map_or(0, |m| m.wasm.len() as u64);
    let logs = c.extra.log.bytes;
    let chunks: u64 = c.extra.chunks.values().map(|p| p.len() as u64).sum();
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
            snapshot_visibility: SnapshotVisibility::Controllers,
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
        memory_size: (heap + stable + globals + binary + sections + logs + chunks).into(),
        memory_metrics: MemoryMetrics {
            wasm_memory_size: heap.into(),
            stable_memory_size: stable.into(),
            global_memory_size: globals.into(),
            wasm_binary_size: binary.into(),
            custom_sections_size: sections.into(),
            canister_history_size: history_bytes(c).into(),
            wasm_chunk_store_size: chunks.into(),
            snapshots_size: 0u64.into(),
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

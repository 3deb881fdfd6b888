//! The management canister (`aaaaa-aa`): creates, installs, upgrades, starts, stops and
//! deletes canisters for their controllers, reports their status and changes their settings.
//! Its Candid types are in [`types`]; installing code is in `install.rs`, settings and status
//! in `settings.rs`, the chunk store in `chunks.rs`, canister snapshots in `snapshots.rs`.
//!
//! A call to it runs as part of the batch, like any other message; a failed call changes
//! nothing and answers with the IC's reject code.

mod chunks;
mod history;
mod install;
mod queries;
mod settings;
mod snapshots;
pub mod types;

pub use chunks::{InstallChunkedCodeArgs, MAX_CHUNK_BYTES, MAX_STORED_CHUNKS};
pub use queries::query_target;
pub use snapshots::UploadCanisterSnapshotDataArgs;

pub use types::*;

use settings::{apply_settings, status_of};

use std::collections::BTreeSet;
use std::sync::Arc;

use candid::{CandidType, Deserialize, Principal};
use thicket_canister::Runtime;

use crate::canister::{Canister, Status};
use crate::ids::{USER_RANGE, canister_id, in_range};
use crate::limits::{
    CREATE_CANISTER_FEE, DEFAULT_PROVISIONAL_CYCLES, MAX_CANISTERS, MAX_STOP_WAITERS,
    decode_argument,
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
                self.controlled(&a.canister_id, caller)?;
                self.uninstall(&a.canister_id, now, by);
                encode(&())
            }
            "take_canister_snapshot" => {
                let a = decode(method, arg)?;
                encode(&self.take_snapshot(caller, by, a)?)
            }
            "load_canister_snapshot" => {
                let a = decode(method, arg)?;
                self.load_snapshot(rt, caller, by, a)?;
                encode(&())
            }
            "list_canister_snapshots" => {
                let a = decode(method, arg)?;
                encode(&self.list_snapshots(caller, a)?)
            }
            "delete_canister_snapshot" => {
                let a = decode(method, arg)?;
                self.delete_snapshot(caller, a)?;
                encode(&())
            }
            "read_canister_snapshot_metadata" => {
                let a = decode(method, arg)?;
                encode(&self.read_snapshot_metadata(caller, a)?)
            }
            "read_canister_snapshot_data" => {
                let a = decode(method, arg)?;
                encode(&self.read_snapshot_data(caller, a)?)
            }
            "upload_canister_snapshot_metadata" => {
                let a = decode(method, arg)?;
                encode(&self.upload_snapshot_metadata(caller, a)?)
            }
            "upload_canister_snapshot_data" => {
                let a = decode(method, arg)?;
                self.upload_snapshot_data(caller, a)?;
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

    /// Removes canister `id`'s code, memories, certified data, log, chunks and timer (its
    /// snapshots stay), and rejects the calls it was answering.
    fn uninstall(&mut self, id: &Principal, now: u64, by: &ChangeOrigin) {
        let Some(c) = self.canisters.get_mut(id) else {
            return;
        };
        c.module = None;
        c.memory = Arc::default();
        c.certified_data.clear();
        c.extra.log.purge();
        c.extra.chunks.clear();
        c.global_timer = 0;
        c.version += 1;
        c.record(now, by.clone(), ChangeDetails::CodeUninstall);
        self.reset_calls(id);
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

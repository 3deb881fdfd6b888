//! The subnet's replicated state machine: canisters executed on wasmtime, the management
//! canister, and the ingress history.
//!
//! A batch runs due global timers first, then its ingress messages in block order. Each
//! message executes at most once (its request id is remembered until it expires); expired
//! messages, and those whose expiry is too far ahead, are not executed. A message to
//! `aaaaa-aa` goes to the management canister; any other runs the canister's
//! `canister_update <method>` export (or its query export, whose changes are discarded).
//! Failures become IC rejects with the IC's reject and error codes; a failed message changes
//! nothing.

use candid::Principal;
use thicket_canister::Runtime;
use thicket_execution::{Batch, IngressStatus, StateMachine};
use thicket_types::Height;
use thicket_types::ingress::{MAX_INGRESS_TTL_NS, PERMITTED_DRIFT_NS, RequestId, SignedIngress};
use thicket_types::state::Chunk;

use crate::calls::IntoCommitted;
use crate::canister::{Status, context};
use crate::limits::{MAX_OUTSTANDING_CALLS, MESSAGE_INSTRUCTION_LIMIT};
use crate::messages::{CallContextState, Origin};
use crate::reject::Reject;
use crate::state::{HistoryEntry, SubnetState};

impl SubnetState {
    /// Runs the global timers that are due, in canister order. A timer runs in a call
    /// context of its own, which may make calls and answers nobody.
    fn run_timers(&mut self, rt: &Runtime) {
        let now = self.time_ns;
        let due: Vec<Principal> = self
            .canisters
            .iter()
            .filter(|(_, c)| {
                c.global_timer != 0 && c.global_timer <= now && c.status == Status::Running
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let call_bytes = self.call_bytes_budget();
            let Some(c) = self.canisters.get_mut(&id) else {
                continue;
            };
            // A timer fires once; the canister sets it again if it wants another.
            c.global_timer = 0;
            let Some(module) = c.module.clone() else {
                continue;
            };
            let Ok(compiled) = module.compiled(rt) else {
                continue;
            };
            if !compiled.has_export("canister_global_timer") {
                continue;
            }
            let mut ctx = context(&id, c, id.as_slice(), "", &[], now);
            ctx.can_call = true;
            ctx.can_respond = false;
            ctx.call_slots = MAX_OUTSTANDING_CALLS.saturating_sub(c.callbacks.len()) as u32;
            ctx.call_bytes = call_bytes;
            let out = rt.execute(
                &compiled,
                &c.memory,
                "canister_global_timer",
                ctx,
                MESSAGE_INSTRUCTION_LIMIT,
            );
            self.batch_instructions += out.instructions;
            c.log_execution(now, &out.debug_output, out.result.as_ref().err());
            if let Err(e) = &out.result {
                tracing::debug!(canister = %id, error = %e, "global timer failed");
                continue;
            }
            let context_id = self.next_call_id;
            self.next_call_id += 1;
            c.call_contexts.insert(
                context_id,
                CallContextState {
                    origin: Origin::System,
                    caller: id.as_slice().to_vec(),
                    responded: false,
                    outstanding: 0,
                    available: 0,
                },
            );
            self.commit(&id, context_id, out.calls_and_state());
            self.conclude(&id, context_id, None);
        }
    }
}

impl StateMachine for SubnetState {
    fn genesis() -> Self {
        let mut state = SubnetState::default();
        state.fund_faucet();
        state
    }

    fn execute(&mut self, batch: &Batch<'_>) -> Vec<(RequestId, IngressStatus)> {
        // Without an engine this replica cannot execute anything: it stops before changing
        // the state (a state that skipped the batch would differ from the other replicas').
        // A restart with a working engine replays the batch.
        let rt = match thicket_canister::shared() {
            Ok(rt) => rt,
            Err(e) => panic!("no Wasm engine, the replica cannot execute: {e}"),
        };
        // Time never goes backwards in the state, whatever a block claims.
        self.time_ns = self.time_ns.max(batch.time_ns);
        self.height = batch.height;
        let now = self.time_ns;
        self.batch_instructions = 0;
        // A request still being answered stays; the others go once they expire.
        self.prune_history(now);
        self.fund_faucet();
        self.run_timers(rt);
        let mut inducted = Vec::new();
        for bytes in &batch.ingress {
            // Blocks carry only authenticated messages (consensus checks each one).
            let Some(signed) = SignedIngress::from_bytes(bytes) else {
                continue;
            };
            // A delegation that expired before the batch makes the message invalid, as an
            // expired message is.
            let delegation_expired = signed.delegation_expiration().is_some_and(|e| e < now);
            let msg = signed.content;
            let id = msg.request_id();
            let expired = msg.ingress_expiry < now || delegation_expired;
            let too_far = msg.ingress_expiry > now + MAX_INGRESS_TTL_NS + PERMITTED_DRIFT_NS;
            if expired || too_far || self.history.contains_key(&id) {
                continue;
            }
            self.remember(
                id,
                HistoryEntry {
                    expiry: msg.ingress_expiry,
                    sender: msg.sender.clone(),
                    status: IngressStatus::Processing {
                        height: batch.height,
                    },
                },
            );
            inducted.push(id);
            let origin = Origin::Ingress {
                id,
                sender: msg.sender.clone(),
                expiry: msg.ingress_expiry,
            };
            match Principal::try_from_slice(&msg.canister_id) {
                Err(_) => self.respond(
                    origin,
                    Err(Reject::new(301, "The canister id is not a principal")),
                    0,
                ),
                Ok(target) => self.call(
                    rt,
                    origin,
                    &msg.sender,
                    &target,
                    &msg.method_name,
                    &msg.arg,
                    0,
                ),
            }
        }
        self.drain_queue(rt);
        // Messages of this batch still waiting for their calls report that they are.
        for id in inducted {
            if let Some(e) = self.history.get(&id)
                && matches!(e.status, IngressStatus::Processing { .. })
            {
                self.finished.push((id, e.status.clone()));
            }
        }
        std::mem::take(&mut self.finished)
    }

    fn height(&self) -> Height {
        self.height
    }

    fn checkpoint(&self) -> Vec<Chunk> {
        crate::checkpoint::chunks(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        crate::checkpoint::decode(bytes)
    }

    fn ingress_status(&self, id: &RequestId) -> Option<&IngressStatus> {
        self.history.get(id).map(|e| &e.status)
    }
}

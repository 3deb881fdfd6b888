//! Calls between canisters of the subnet, and the call contexts that track every call a
//! canister is answering.
//!
//! A message to a canister (from ingress, from another canister, or a timer of its own)
//! opens a *call context*. The entry point may reply or reject, and may make calls
//! (`ic0.call_new` … `ic0.call_perform`); each call it makes registers a *callback* (its reply,
//! reject and cleanup closures) and puts a request on the subnet's message queue. The callee
//! answers with a response, which runs the reply or reject closure in the caller's call
//! context; that closure may reply, and may call again. A context closes once it has
//! responded and has no outstanding calls; one that closes without a response answers its
//! caller with IC0506 ("did not reply").
//!
//! Everything here is deterministic: the queue is FIFO, drained in each batch after timers and
//! ingress (a bounded number of messages per batch; the rest wait for the next). A trapping
//! entry point or callback keeps nothing, not even its calls; a trapping callback runs its
//! cleanup closure, whose changes are kept. Cycles move with calls: attached cycles leave the
//! caller's balance when the message commits, the callee accepts what it wants, and the rest
//! returns with the response.

use std::collections::VecDeque;

use candid::Principal;
use thicket_canister::{ExecError, Executed, Outcome, Runtime};
use thicket_execution::IngressStatus;

use crate::canister::{Status, apply, context};
use crate::limits::{
    MAX_CALL_BYTES_PER_EXECUTION, MAX_INSTRUCTIONS_PER_BATCH, MAX_MESSAGES_PER_BATCH,
    MAX_OUTSTANDING_CALLS, MAX_QUEUE_BYTES, MESSAGE_INSTRUCTION_LIMIT,
};
use crate::management::EMPTY_REPLY;
use crate::messages::{CallContextState, Callback, Message, Origin};
use crate::reject::{Reject, exec_reject};
use crate::state::{HistoryEntry, SubnetState};
use crate::system::SystemCanister;

fn answer(outcome: Outcome) -> Option<Result<Vec<u8>, Reject>> {
    match outcome {
        Outcome::Reply(bytes) => Some(Ok(bytes)),
        Outcome::Reject(message) => Some(Err(Reject::by_canister(message))),
        Outcome::NoResponse => None,
    }
}

impl SubnetState {
    /// Answers `origin`, returning `refund` unaccepted cycles to a calling canister.
    pub(crate) fn respond(
        &mut self,
        origin: Origin,
        result: Result<Vec<u8>, Reject>,
        refund: u128,
    ) {
        match origin {
            Origin::Ingress { id, sender, expiry } => {
                let height = self.height;
                let status = match result {
                    Ok(reply) => IngressStatus::Replied { height, reply },
                    Err(r) => r.status(height),
                };
                self.remember(
                    id,
                    HistoryEntry {
                        expiry,
                        sender,
                        status: status.clone(),
                    },
                );
                self.finished.push((id, status));
            }
            Origin::Canister { caller, callback } => self.enqueue(Message::Response {
                originator: caller,
                callback,
                payload: result,
                refund,
            }),
            Origin::System => {
                if let Err(r) = result {
                    tracing::debug!(reject = %r.message, "a system task's call context closed");
                }
            }
        }
    }

    /// A call from `caller` (answered to `origin`) to `target`'s `method`, with `cycles`
    /// attached.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call(
        &mut self,
        rt: &Runtime,
        origin: Origin,
        caller: &[u8],
        target: &Principal,
        method: &str,
        arg: &[u8],
        cycles: u128,
    ) {
        if *target == Principal::management_canister() {
            match Principal::try_from_slice(caller) {
                Ok(caller) => self.manage(rt, origin, &caller, method, arg, cycles),
                Err(_) => self.respond(
                    origin,
                    Err(Reject::new(301, "The sender is not a principal")),
                    cycles,
                ),
            }
            return;
        }
        if let Some(which) = SystemCanister::of(target) {
            self.system_call(origin, which, caller, method, arg, cycles);
            return;
        }
        if let Err(r) = self.enter(rt, origin.clone(), caller, target, method, arg, cycles) {
            self.respond(origin, Err(r), cycles);
        }
    }

    /// Runs `method` of canister `id` in a new call context; an error means nothing happened
    /// (the caller is answered with it).
    #[allow(clippy::too_many_arguments)]
    fn enter(
        &mut self,
        rt: &Runtime,
        origin: Origin,
        caller: &[u8],
        id: &Principal,
        method: &str,
        arg: &[u8],
        cycles: u128,
    ) -> Result<(), Reject> {
        let now = self.time_ns;
        let call_bytes = self.call_bytes_budget();
        let c = self
            .canisters
            .get_mut(id)
            .ok_or_else(|| Reject::new(301, format!("Canister {id} not found")))?;
        match c.status {
            Status::Running => {}
            Status::Stopping => return Err(Reject::new(509, format!("Canister {id} is stopping"))),
            Status::Stopped => return Err(Reject::new(508, format!("Canister {id} is stopped"))),
        }
        let Some(module) = c.module.clone() else {
            return Err(Reject::new(
                537,
                format!("Canister {id} is empty: it contains no Wasm module"),
            ));
        };
        let compiled = module.compiled(rt).map_err(|e| exec_reject(id, e))?;
        let update = format!("canister_update {method}");
        let query = format!("canister_query {method}");
        let (entry, is_update) = if compiled.has_export(&update) {
            (update, true)
        } else if compiled.has_export(&query) {
            (query, false)
        } else {
            return Err(Reject::new(
                536,
                format!("Canister {id} has no update method '{method}'"),
            ));
        };
        let mut ctx = context(id, c, caller, method, arg, now);
        // A query method called as an update changes nothing and calls nobody.
        ctx.can_call = is_update;
        ctx.cycles_available = if is_update { cycles } else { 0 };
        ctx.call_slots = MAX_OUTSTANDING_CALLS.saturating_sub(c.callbacks.len()) as u32;
        ctx.call_bytes = call_bytes;
        let mut out = if is_update {
            rt.execute(&compiled, &c.memory, &entry, ctx, MESSAGE_INSTRUCTION_LIMIT)
        } else {
            rt.query(&compiled, &c.memory, &entry, ctx, MESSAGE_INSTRUCTION_LIMIT)
        };
        self.batch_instructions += out.instructions;
        c.log_execution(now, &out.debug_output, out.result.as_ref().err());
        let context_id = self.next_call_id;
        self.next_call_id += 1;
        c.call_contexts.insert(
            context_id,
            CallContextState {
                origin,
                caller: caller.to_vec(),
                responded: false,
                outstanding: 0,
                available: cycles,
            },
        );
        let outcome = match out.take_result() {
            Ok(o) => o,
            Err(e) => {
                c.call_contexts.remove(&context_id);
                return Err(exec_reject(id, e));
            }
        };
        if is_update {
            self.commit(id, context_id, out.calls_and_state());
        }
        self.conclude(id, context_id, answer(outcome));
        Ok(())
    }

    /// Keeps what a successful execution in call context `context_id` changed, and sends its
    /// calls.
    pub(crate) fn commit(&mut self, id: &Principal, context_id: u64, out: Committed) {
        let Some(c) = self.canisters.get_mut(id) else {
            return;
        };
        apply(c, out.memory, out.global_timer, out.certified_data);
        c.cycles = out.cycles_balance;
        let mut sent = Vec::new();
        for call in out.calls {
            let callback = self.next_call_id;
            self.next_call_id += 1;
            // `ic0.call_new` traps on a callee longer than a principal, so this holds; a
            // callee that is no canister of the subnet is rejected when the request arrives.
            let receiver =
                Principal::try_from_slice(&call.callee).unwrap_or_else(|_| Principal::anonymous());
            c.callbacks.insert(
                callback,
                Callback {
                    context: context_id,
                    callee: receiver,
                    reply: call.reply,
                    reject: call.reject,
                    cleanup: call.cleanup,
                },
            );
            sent.push(Message::Request {
                sender: *id,
                receiver,
                method: call.method,
                arg: call.arg,
                cycles: call.cycles,
                callback,
            });
        }
        if let Some(cc) = c.call_contexts.get_mut(&context_id) {
            cc.available = out.cycles_available;
            cc.outstanding += sent.len() as u32;
        }
        for m in sent {
            self.enqueue(m);
        }
    }

    fn enqueue(&mut self, m: Message) {
        self.queue_bytes += m.bytes();
        self.queue.push_back(m);
    }

    /// The argument bytes an execution's calls may carry: its own limit, or what is left of
    /// the queue's.
    pub(crate) fn call_bytes_budget(&self) -> u64 {
        MAX_QUEUE_BYTES
            .saturating_sub(self.queue_bytes)
            .min(MAX_CALL_BYTES_PER_EXECUTION)
    }

    /// Answers call context `context_id` of `id` with `answer` if it has not responded yet,
    /// and closes it once nothing is outstanding (answering IC0506 if it never responded).
    /// A stopping canister whose last context closes stops.
    pub(crate) fn conclude(
        &mut self,
        id: &Principal,
        context_id: u64,
        answer: Option<Result<Vec<u8>, Reject>>,
    ) {
        let Some(c) = self.canisters.get_mut(id) else {
            return;
        };
        let Some(cc) = c.call_contexts.get_mut(&context_id) else {
            return;
        };
        let mut answers = Vec::new();
        if let Some(a) = answer
            && !cc.responded
        {
            cc.responded = true;
            answers.push((cc.origin.clone(), a, std::mem::take(&mut cc.available)));
        }
        if cc.outstanding == 0 {
            if !cc.responded {
                answers.push((
                    cc.origin.clone(),
                    Err(Reject::new(
                        506,
                        format!("Canister {id} did not reply to the call"),
                    )),
                    std::mem::take(&mut cc.available),
                ));
            }
            c.call_contexts.remove(&context_id);
            if c.status == Status::Stopping && c.call_contexts.is_empty() {
                c.status = Status::Stopped;
                for (origin, refund) in std::mem::take(&mut c.stop_waiters) {
                    answers.push((origin, Ok(EMPTY_REPLY.to_vec()), refund));
                }
            }
        }
        for (origin, result, refund) in answers {
            self.respond(origin, result, refund);
        }
    }

    /// Delivers a response: runs the callback's reply or reject closure in its call context.
    pub(crate) fn deliver(
        &mut self,
        rt: &Runtime,
        originator: &Principal,
        callback: u64,
        payload: Result<Vec<u8>, Reject>,
        refund: u128,
    ) {
        let now = self.time_ns;
        let call_bytes = self.call_bytes_budget();
        // A response to a deleted canister is dropped. One to a callback dropped by
        // uninstalling runs nothing, but its refund still returns.
        let Some(c) = self.canisters.get_mut(originator) else {
            return;
        };
        c.cycles = c.cycles.saturating_add(refund);
        let Some(cb) = c.callbacks.remove(&callback) else {
            return;
        };
        let Some(cc) = c.call_contexts.get_mut(&cb.context) else {
            return;
        };
        cc.outstanding = cc.outstanding.saturating_sub(1);
        let (caller, responded, available) = (cc.caller.clone(), cc.responded, cc.available);
        let compiled = match &c.module {
            Some(m) => m.compiled(rt).map_err(|e| exec_reject(originator, e)),
            None => Err(Reject::new(
                537,
                format!("Canister {originator} is empty: its callback cannot run"),
            )),
        };
        let compiled = match compiled {
            Ok(compiled) => compiled,
            Err(r) => {
                let last = cc.outstanding == 0;
                self.conclude(originator, cb.context, last.then_some(Err(r)));
                return;
            }
        };
        let (closure, arg, reject) = match payload {
            Ok(bytes) => (cb.reply, bytes, (0, String::new())),
            Err(r) => (cb.reject, Vec::new(), (u32::from(r.code), r.message)),
        };
        let mut ctx = context(originator, c, &caller, "", &arg, now);
        ctx.can_call = true;
        ctx.can_respond = !responded;
        ctx.reject = Some(reject.clone());
        ctx.cycles_available = available;
        ctx.cycles_refunded = refund;
        ctx.call_slots = MAX_OUTSTANDING_CALLS.saturating_sub(c.callbacks.len()) as u32;
        ctx.call_bytes = call_bytes;
        let out = rt.execute_closure(
            &compiled,
            &c.memory,
            closure,
            ctx,
            MESSAGE_INSTRUCTION_LIMIT,
        );
        self.batch_instructions += out.instructions;
        c.log_execution(now, &out.debug_output, out.result.as_ref().err());
        match out.result {
            Ok(ref o) => {
                let a = answer(o.clone());
                self.commit(originator, cb.context, out.calls_and_state());
                self.conclude(originator, cb.context, a);
            }
            Err(e) => {
                let r = exec_reject(originator, e);
                tracing::debug!(canister = %originator, reject = %r.message, "a callback trapped");
                if let Some(cleanup) = cb.cleanup {
                    // A cleanup neither answers nor calls, and sees no reject.
                    let mut ctx = context(originator, c, &caller, "", &[], now);
                    ctx.can_respond = false;
                    let out = rt.execute_closure(
                        &compiled,
                        &c.memory,
                        cleanup,
                        ctx,
                        MESSAGE_INSTRUCTION_LIMIT,
                    );
                    self.batch_instructions += out.instructions;
                    c.log_execution(now, &out.debug_output, out.result.as_ref().err());
                    match out.result {
                        Ok(_) => apply(c, out.memory, out.global_timer, out.certified_data),
                        Err(e) => tracing::debug!(
                            canister = %originator,
                            error = %e,
                            "a cleanup callback trapped"
                        ),
                    }
                }
                let last = c
                    .call_contexts
                    .get(&cb.context)
                    .is_some_and(|cc| cc.outstanding == 0);
                self.conclude(originator, cb.context, last.then_some(Err(r)));
            }
        }
    }

    /// Handles queued messages, at most [`MAX_MESSAGES_PER_BATCH`], until the batch has
    /// spent [`MAX_INSTRUCTIONS_PER_BATCH`].
    pub(crate) fn drain_queue(&mut self, rt: &Runtime) {
        for _ in 0..MAX_MESSAGES_PER_BATCH {
            if self.batch_instructions >= MAX_INSTRUCTIONS_PER_BATCH {
                return;
            }
            let Some(m) = self.queue.pop_front() else {
                return;
            };
            self.queue_bytes = self.queue_bytes.saturating_sub(m.bytes());
            match m {
                Message::Request {
                    sender,
                    receiver,
                    method,
                    arg,
                    cycles,
                    callback,
                } => {
                    let origin = Origin::Canister {
                        caller: sender,
                        callback,
                    };
                    self.call(
                        rt,
                        origin,
                        sender.as_slice(),
                        &receiver,
                        &method,
                        &arg,
                        cycles,
                    );
                }
                Message::Response {
                    originator,
                    callback,
                    payload,
                    refund,
                } => self.deliver(rt, &originator, callback, payload, refund),
            }
        }
    }

    /// Drops every call context and callback of canister `id` (its code was uninstalled or
    /// replaced): open contexts are rejected, and responses to its calls will be dropped.
    pub(crate) fn reset_calls(&mut self, id: &Principal) {
        let Some(c) = self.canisters.get_mut(id) else {
            return;
        };
        c.callbacks.clear();
        let contexts = std::mem::take(&mut c.call_contexts);
        let waiters = std::mem::take(&mut c.stop_waiters);
        if c.status == Status::Stopping {
            c.status = Status::Stopped;
        }
        for (_, cc) in contexts {
            if !cc.responded {
                self.respond(
                    cc.origin,
                    Err(Reject::new(
                        516,
                        format!("Canister {id}'s code was uninstalled or replaced"),
                    )),
                    cc.available,
                );
            }
        }
        for (origin, refund) in waiters {
            self.respond(origin, Ok(EMPTY_REPLY.to_vec()), refund);
        }
    }

    pub fn queue(&self) -> &VecDeque<Message> {
        &self.queue
    }
}

/// What a successful execution leaves to commit.
pub(crate) struct Committed {
    pub memory: Option<thicket_canister::CanisterMemory>,
    pub global_timer: u64,
    pub certified_data: Option<Vec<u8>>,
    pub calls: Vec<thicket_canister::OutgoingCall>,
    pub cycles_balance: u128,
    pub cycles_available: u128,
}

pub(crate) trait IntoCommitted {
    fn calls_and_state(self) -> Committed;
    /// The result, leaving an empty one in its place.
    fn take_result(&mut self) -> Result<Outcome, ExecError>;
}

impl IntoCommitted for Executed {
    fn take_result(&mut self) -> Result<Outcome, ExecError> {
        std::mem::replace(&mut self.result, Ok(Outcome::NoResponse))
    }

    fn calls_and_state(self) -> Committed {
        Committed {
            memory: self.memory,
            global_timer: self.global_timer,
            certified_data: self.certified_data,
            calls: self.calls,
            cycles_balance: self.cycles_balance,
            cycles_available: self.cycles_available,
        }
    }
}

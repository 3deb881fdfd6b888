//! What calls between canisters are made of: who waits for an answer ([`Origin`]), the call
//! contexts and callbacks a canister holds, and the messages of the subnet's queue.

use candid::Principal;
use serde::{Deserialize, Serialize};
use thicket_canister::Closure;
use thicket_types::ingress::RequestId;

use crate::reject::Reject;

/// Who is waiting for a call context's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// An ingress message: its status goes into the ingress history.
    Ingress {
        id: RequestId,
        sender: Vec<u8>,
        expiry: u64,
    },
    /// A canister's call: the answer goes back as a response to its callback.
    Canister { caller: Principal, callback: u64 },
    /// The system (a timer): nobody waits.
    System,
}

/// A call a canister is answering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallContextState {
    pub origin: Origin,
    /// What `ic0.msg_caller` gives in this context and its callbacks.
    pub caller: Vec<u8>,
    pub responded: bool,
    /// Calls made in this context still waiting for their response.
    pub outstanding: u32,
    /// Attached cycles not accepted yet (refunded with the answer).
    pub available: u128,
}

/// What to run when the response to an outstanding call arrives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub context: u64,
    pub callee: Principal,
    pub reply: Closure,
    pub reject: Closure,
    pub cleanup: Option<Closure>,
}

/// A message between canisters of the subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Request {
        sender: Principal,
        receiver: Principal,
        method: String,
        arg: Vec<u8>,
        cycles: u128,
        callback: u64,
    },
    Response {
        originator: Principal,
        callback: u64,
        payload: Result<Vec<u8>, Reject>,
        refund: u128,
    },
}

impl Message {
    /// What the message weighs in the queue: its argument or payload, and a fixed overhead.
    pub fn bytes(&self) -> u64 {
        let payload = match self {
            Message::Request { arg, method, .. } => arg.len() + method.len(),
            Message::Response {
                payload: Ok(reply), ..
            } => reply.len(),
            Message::Response {
                payload: Err(r), ..
            } => r.message.len(),
        };
        payload as u64 + 100
    }
}

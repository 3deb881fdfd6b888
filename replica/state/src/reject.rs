//! Rejects with the IC's reject codes (1 system fatal … 5 canister error) and error codes
//! (`IC0503` …), and how execution errors map to them.

use candid::Principal;
use serde::{Deserialize, Serialize};
use thicket_canister::ExecError;
use thicket_execution::IngressStatus;
use thicket_types::Height;

/// An IC reject: the reject code (1 system fatal … 5 canister error), a readable message, and
/// the IC's error code (`IC0503` …), whose first digit is the reject code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub code: u8,
    pub message: String,
    pub error_code: String,
}

impl Reject {
    /// A reject with IC error code `code` (e.g. 503 for `IC0503`).
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Reject {
            code: (code / 100) as u8,
            message: message.into(),
            error_code: format!("IC{code:04}"),
        }
    }

    /// A reject by the canister itself (`ic0.msg_reject`): code 4, no error code of the IC's.
    pub fn by_canister(message: String) -> Self {
        Reject {
            code: 4,
            message,
            error_code: String::new(),
        }
    }

    pub(crate) fn status(self, height: Height) -> IngressStatus {
        IngressStatus::Rejected {
            height,
            code: self.code,
            message: self.message,
            error_code: (!self.error_code.is_empty()).then_some(self.error_code),
        }
    }
}

pub(crate) fn exec_reject(id: &Principal, e: ExecError) -> Reject {
    match e {
        ExecError::InvalidModule(m) => Reject::new(
            505,
            format!("Canister {id}'s Wasm module is not valid: {m}"),
        ),
        ExecError::MissingMethod(m) => {
            Reject::new(536, format!("Canister {id} has no entry point {m:?}"))
        }
        ExecError::Trap(m) => Reject::new(502, format!("Canister {id} trapped: {m}")),
        ExecError::CalledTrap(m) => {
            Reject::new(503, format!("Canister {id} trapped explicitly: {m}"))
        }
        ExecError::ContractViolation(m) => {
            Reject::new(504, format!("Canister {id} violated contract: {m}"))
        }
        ExecError::OutOfInstructions(limit) => Reject::new(
            522,
            format!(
                "Canister {id} exceeded the instruction limit for single message execution ({limit} instructions)"
            ),
        ),
    }
}

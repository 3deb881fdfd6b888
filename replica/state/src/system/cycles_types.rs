//! The cycles ledger's Candid types, as its published interface gives them, and how a failed
//! payment reads in each method's error type.

use candid::{CandidType, Deserialize, Nat, Principal};
use icrc_ledger_types::icrc1::account::{Account, Subaccount};
use serde_bytes::ByteBuf;

use crate::ids::canister_index;
use crate::ledger::{Refusal, Refused, refused};
use crate::management::CanisterSettings;

#[derive(CandidType, Deserialize)]
pub(super) struct DepositArgs {
    pub to: Account,
    pub memo: Option<ByteBuf>,
}

#[derive(CandidType, Deserialize)]
pub(super) struct DepositResult {
    pub balance: Nat,
    pub block_index: Nat,
}

/// Why a call the ledger made for a request was refused.
#[derive(CandidType, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum RejectionCode {
    NoError,
    SysFatal,
    SysTransient,
    DestinationInvalid,
    CanisterReject,
    CanisterError,
    Unknown,
}

#[derive(CandidType, Deserialize)]
pub(super) struct WithdrawArgs {
    pub amount: Nat,
    pub from_subaccount: Option<Subaccount>,
    pub to: Principal,
    pub created_at_time: Option<u64>,
}

#[derive(CandidType, Deserialize, Debug)]
pub(super) enum WithdrawError {
    GenericError {
        message: String,
        error_code: Nat,
    },
    TemporarilyUnavailable,
    FailedToWithdraw {
        fee_block: Option<Nat>,
        rejection_code: RejectionCode,
        rejection_reason: String,
    },
    Duplicate {
        duplicate_of: Nat,
    },
    BadFee {
        expected_fee: Nat,
    },
    InvalidReceiver {
        receiver: Principal,
    },
    CreatedInFuture {
        ledger_time: u64,
    },
    TooOld,
    InsufficientFunds {
        balance: Nat,
    },
}

#[derive(CandidType, Deserialize)]
pub(super) struct WithdrawFromArgs {
    pub spender_subaccount: Option<Subaccount>,
    pub from: Account,
    pub to: Principal,
    pub amount: Nat,
    pub created_at_time: Option<u64>,
}

#[derive(CandidType, Deserialize, Debug)]
pub(super) enum WithdrawFromError {
    GenericError {
        message: String,
        error_code: Nat,
    },
    TemporarilyUnavailable,
    FailedToWithdrawFrom {
        withdraw_from_block: Option<Nat>,
        refund_block: Option<Nat>,
        approval_refund_block: Option<Nat>,
        rejection_code: RejectionCode,
        rejection_reason: String,
    },
    Duplicate {
        duplicate_of: Nat,
    },
    InvalidReceiver {
        receiver: Principal,
    },
    CreatedInFuture {
        ledger_time: u64,
    },
    TooOld,
    InsufficientFunds {
        balance: Nat,
    },
    InsufficientAllowance {
        allowance: Nat,
    },
}

/// Where the cycles-minting canister should create a canister.
#[derive(CandidType, Deserialize, Clone, Debug)]
pub enum SubnetSelection {
    Subnet { subnet: Principal },
    Filter(SubnetFilter),
}

#[derive(CandidType, Deserialize, Clone, Debug)]
pub struct SubnetFilter {
    pub subnet_type: Option<String>,
}

#[derive(CandidType, Deserialize)]
pub(super) struct CmcCreateCanisterArgs {
    pub settings: Option<CanisterSettings>,
    pub subnet_selection: Option<SubnetSelection>,
}

#[derive(CandidType, Deserialize)]
pub(super) struct CreateCanisterArgs {
    pub from_subaccount: Option<Subaccount>,
    pub created_at_time: Option<u64>,
    pub amount: Nat,
    pub creation_args: Option<CmcCreateCanisterArgs>,
}

#[derive(CandidType, Deserialize)]
pub(super) struct CreateCanisterFromArgs {
    pub from: Account,
    pub spender_subaccount: Option<Subaccount>,
    pub created_at_time: Option<u64>,
    pub amount: Nat,
    pub creation_args: Option<CmcCreateCanisterArgs>,
}

#[derive(CandidType, Deserialize)]
pub(super) struct CreateCanisterSuccess {
    pub block_id: Nat,
    pub canister_id: Principal,
}

#[derive(CandidType, Deserialize, Debug)]
pub(super) enum CreateCanisterError {
    InsufficientFunds {
        balance: Nat,
    },
    TooOld,
    CreatedInFuture {
        ledger_time: u64,
    },
    TemporarilyUnavailable,
    Duplicate {
        duplicate_of: Nat,
        canister_id: Option<Principal>,
    },
    FailedToCreate {
        fee_block: Option<Nat>,
        refund_block: Option<Nat>,
        error: String,
    },
    GenericError {
        message: String,
        error_code: Nat,
    },
}

#[derive(CandidType, Deserialize, Debug)]
pub(super) enum CreateCanisterFromError {
    InsufficientFunds {
        balance: Nat,
    },
    InsufficientAllowance {
        allowance: Nat,
    },
    TooOld,
    CreatedInFuture {
        ledger_time: u64,
    },
    TemporarilyUnavailable,
    Duplicate {
        duplicate_of: Nat,
        canister_id: Option<Principal>,
    },
    FailedToCreateFrom {
        create_from_block: Option<Nat>,
        refund_block: Option<Nat>,
        approval_refund_block: Option<Nat>,
        rejection_code: RejectionCode,
        rejection_reason: String,
    },
    GenericError {
        message: String,
        error_code: Nat,
    },
}

#[derive(CandidType, Deserialize)]
pub(super) struct SupportedStandard {
    pub name: String,
    pub url: String,
}

/// What a withdrawal or a creation takes from an account: its own, or one it is allowed to
/// spend from.
pub(super) struct Payer {
    pub from: Account,
    pub spender: Option<Account>,
}

impl Payer {
    /// The caller's own account.
    pub(super) fn own(caller: &Principal, subaccount: Option<Subaccount>) -> Self {
        Payer {
            from: Account {
                owner: *caller,
                subaccount,
            },
            spender: None,
        }
    }

    /// `from`, spent by the caller's account within its allowance.
    pub(super) fn spender(
        from: Account,
        caller: &Principal,
        subaccount: Option<Subaccount>,
    ) -> Self {
        Payer {
            from,
            spender: Some(Account {
                owner: *caller,
                subaccount,
            }),
        }
    }
}

/// Why a payment failed, before anything was taken.
pub(super) enum Unpaid {
    Refused(Refusal),
    Funds(u128),
    Allowance(u128),
    Failed(RejectionCode, String),
}

refused!(WithdrawError, WithdrawFromError);
refused!(@duplicate CreateCanisterError, |block, canister| Self::Duplicate {
    duplicate_of: block.into(),
    canister_id: canister,
});
refused!(@duplicate CreateCanisterFromError, |block, canister| Self::Duplicate {
    duplicate_of: block.into(),
    canister_id: canister,
});

pub(super) fn withdraw_error(e: Unpaid, to: Principal) -> WithdrawError {
    match e {
        Unpaid::Refused(r) => Refused::refused(r),
        Unpaid::Funds(b) => WithdrawError::InsufficientFunds { balance: b.into() },
        Unpaid::Allowance(a) => WithdrawError::GenericError {
            message: format!("the allowance of {a} cycles is too small"),
            error_code: 0u64.into(),
        },
        Unpaid::Failed(RejectionCode::DestinationInvalid, _) if canister_index(&to).is_none() => {
            WithdrawError::InvalidReceiver { receiver: to }
        }
        Unpaid::Failed(rejection_code, rejection_reason) => WithdrawError::FailedToWithdraw {
            fee_block: None,
            rejection_code,
            rejection_reason,
        },
    }
}

pub(super) fn withdraw_from_error(e: Unpaid, to: Principal) -> WithdrawFromError {
    match e {
        Unpaid::Refused(r) => Refused::refused(r),
        Unpaid::Funds(b) => WithdrawFromError::InsufficientFunds { balance: b.into() },
        Unpaid::Allowance(a) => WithdrawFromError::InsufficientAllowance {
            allowance: a.into(),
        },
        Unpaid::Failed(RejectionCode::DestinationInvalid, _) if canister_index(&to).is_none() => {
            WithdrawFromError::InvalidReceiver { receiver: to }
        }
        Unpaid::Failed(rejection_code, rejection_reason) => {
            WithdrawFromError::FailedToWithdrawFrom {
                withdraw_from_block: None,
                refund_block: None,
                approval_refund_block: None,
                rejection_code,
                rejection_reason,
            }
        }
    }
}

pub(super) fn create_error(e: Unpaid) -> CreateCanisterError {
    match e {
        Unpaid::Refused(r) => Refused::refused(r),
        Unpaid::Funds(b) => CreateCanisterError::InsufficientFunds { balance: b.into() },
        Unpaid::Allowance(a) => CreateCanisterError::GenericError {
            message: format!("the allowance of {a} cycles is too small"),
            error_code: 0u64.into(),
        },
        Unpaid::Failed(_, error) => CreateCanisterError::FailedToCreate {
            fee_block: None,
            refund_block: None,
            error,
        },
    }
}

pub(super) fn create_from_error(e: Unpaid) -> CreateCanisterFromError {
    match e {
        Unpaid::Refused(r) => Refused::refused(r),
        Unpaid::Funds(b) => CreateCanisterFromError::InsufficientFunds { balance: b.into() },
        Unpaid::Allowance(a) => CreateCanisterFromError::InsufficientAllowance {
            allowance: a.into(),
        },
        Unpaid::Failed(rejection_code, rejection_reason) => {
            CreateCanisterFromError::FailedToCreateFrom {
                create_from_block: None,
                refund_block: None,
                approval_refund_block: None,
                rejection_code,
                rejection_reason,
            }
        }
    }
}

//! The system canisters' state ([`SystemState`]), which is the cycles ledger's book: balances, approvals, block numbers and the deduplication of
//! recent transactions, under the rules of ICRC-1 and ICRC-2 (fees, mints, burns, allowances,
//! `created_at_time`). What moves cycles in and out of it (deposits, withdrawals, canister
//! creation) is in [`crate::system`]; this part knows nothing of canisters.
//!
//! The developer faucet: the anonymous principal's default account starts with [`FAUCET`]
//! cycles (icp-cli's local networks fund the anonymous principal the same way), so anyone can
//! create canisters as icp-cli's default identity, or hand cycles to another identity with
//! `icp cycles transfer <amount> <principal>`. Cycles on a Thicket subnet are bookkeeping its
//! users share (the management canister's provisional methods give them to anyone), so this
//! gives away nothing a Thicket subnet does not already. Like the IC's cycles ledger, it has
//! no minting account: cycles come in by deposits and leave by withdrawals, creations and
//! fees.

use std::collections::{BTreeMap, BTreeSet};

use candid::{Nat, Principal};
use icrc_ledger_types::icrc1::account::Account;
use icrc_ledger_types::icrc1::transfer::{Memo, TransferArg, TransferError};
use icrc_ledger_types::icrc2::allowance::{Allowance, AllowanceArgs};
use icrc_ledger_types::icrc2::approve::{ApproveArgs, ApproveError};
use icrc_ledger_types::icrc2::transfer_from::{TransferFromArgs, TransferFromError};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

/// The fee of every transfer, approval, withdrawal and canister creation (as on the IC).
pub const FEE: u128 = 100_000_000;
/// The cycles ledger's decimals: amounts are in cycles, shown in trillions.
pub const DECIMALS: u8 = 12;
/// How long a transaction with a `created_at_time` is remembered against duplicates.
pub const TX_WINDOW_NS: u64 = 24 * 3600 * 1_000_000_000;
/// How far a `created_at_time` may be ahead of the ledger's time.
pub const PERMITTED_DRIFT_NS: u64 = 60 * 1_000_000_000;
/// The longest memo accepted.
pub const MAX_MEMO_BYTES: usize = 32;

/// What the faucet account starts with: a trillion trillion cycles.
pub const FAUCET: u128 = 1_000_000_000_000_000_000_000_000;

/// The faucet's account: the anonymous principal's default one.
pub fn faucet() -> Account {
    Account {
        owner: Principal::anonymous(),
        subaccount: None,
    }
}

/// An account with the default subaccount written as `None`, so one account has one key.
pub fn normal(a: Account) -> Account {
    Account {
        owner: a.owner,
        subaccount: a.subaccount.filter(|s| *s != [0; 32]),
    }
}

/// An approval of a spender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub amount: u128,
    pub expires_at: Option<u64>,
}

/// A transaction remembered against duplicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recent {
    pub created_at_time: u64,
    pub block: u64,
    /// The canister a `create_canister` made.
    pub canister: Option<Principal>,
}

/// Why a transaction is refused before it touches the book: the errors ICRC-1 shares between
/// its methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    TooOld,
    CreatedInFuture {
        ledger_time: u64,
    },
    Duplicate {
        duplicate_of: u64,
        canister: Option<Principal>,
    },
    Generic(String),
}

/// An error type of the ledger's methods, which all name the refusals ICRC-1 shares.
pub trait Refused: Sized {
    fn refused(r: Refusal) -> Self;

    fn generic(message: impl Into<String>) -> Self {
        Self::refused(Refusal::Generic(message.into()))
    }
}

/// Implements [`Refused`]: for error types whose `Duplicate` names the block alone, or (with
/// `@duplicate |block, canister| expression`) one that builds their `Duplicate`.
macro_rules! refused {
    (@duplicate $t:ty, |$d:ident, $c:ident| $dup:expr) => {
        impl $crate::ledger::Refused for $t {
            fn refused(r: $crate::ledger::Refusal) -> Self {
                use $crate::ledger::Refusal;
                match r {
                    Refusal::TooOld => Self::TooOld,
                    Refusal::CreatedInFuture { ledger_time } => Self::CreatedInFuture { ledger_time },
                    Refusal::Duplicate {
                        duplicate_of: $d,
                        canister: $c,
                    } => $dup,
                    Refusal::Generic(message) => Self::GenericError {
                        error_code: 0u64.into(),
                        message,
                    },
                }
            }
        }
    };
    ($($t:ty),*) => {$(
        $crate::ledger::refused!(@duplicate $t, |block, _canister| Self::Duplicate {
            duplicate_of: block.into(),
        });
    )*};
}
pub(crate) use refused;

refused!(TransferError, ApproveError, TransferFromError);

/// The ledger's book.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Balances of the accounts that hold cycles (no zero entries).
    #[serde(default)]
    pub balances: BTreeMap<Account, u128>,
    /// Allowances by owner, then spender (no zero entries).
    #[serde(default)]
    pub allowances: BTreeMap<Account, BTreeMap<Account, Approval>>,
    /// The index the next block gets.
    #[serde(default)]
    pub next_block: u64,
    #[serde(default)]
    pub total_supply: u128,
    /// Transactions with a `created_at_time` within the window, by their hash.
    #[serde(default)]
    pub recent: BTreeMap<ByteBuf, Recent>,
    /// The same, by `created_at_time`, so the window moves without a pass over all of them.
    #[serde(default)]
    pub recent_by_time: BTreeSet<(u64, ByteBuf)>,
    /// Whether the faucet got its cycles.
    #[serde(default)]
    pub faucet_funded: bool,
}

/// A transaction's identity for deduplication: who sent which method with which argument.
pub fn tx_hash(caller: &Principal, method: &str, arg: &[u8]) -> ByteBuf {
    let mut h = Sha256::new();
    h.update((caller.as_slice().len() as u8).to_be_bytes());
    h.update(caller.as_slice());
    h.update((method.len() as u32).to_be_bytes());
    h.update(method.as_bytes());
    h.update(arg);
    ByteBuf::from(h.finalize().to_vec())
}

fn amount(n: &Nat) -> Option<u128> {
    u128::try_from(&n.0).ok()
}

fn memo_ok(memo: &Option<Memo>) -> Result<(), Refusal> {
    match memo {
        Some(m) if m.0.len() > MAX_MEMO_BYTES => Err(Refusal::Generic(format!(
            "the memo has {} bytes, at most {MAX_MEMO_BYTES} are allowed",
            m.0.len()
        ))),
        _ => Ok(()),
    }
}

/// A fee as the caller gave it: none, or the expected one.
fn fee_ok(fee: &Option<Nat>, expected: u128) -> bool {
    fee.as_ref().is_none_or(|f| *f == expected)
}

impl Ledger {
    /// Funds the faucet, once.
    pub fn fund_faucet(&mut self) {
        if !self.faucet_funded {
            self.faucet_funded = true;
            self.credit(&faucet(), FAUCET);
            self.block(ByteBuf::new(), None, None);
        }
    }

    pub fn balance(&self, a: &Account) -> u128 {
        self.balances.get(&normal(*a)).copied().unwrap_or(0)
    }

    pub fn allowance(&self, a: &AllowanceArgs, now: u64) -> Allowance {
        let approval = self
            .allowances
            .get(&normal(a.account))
            .and_then(|m| m.get(&normal(a.spender)))
            .filter(|ap| ap.expires_at.is_none_or(|t| t > now));
        match approval {
            Some(ap) => Allowance {
                allowance: ap.amount.into(),
                expires_at: ap.expires_at,
            },
            None => Allowance {
                allowance: 0u64.into(),
                expires_at: None,
            },
        }
    }

    /// Checks `created_at_time` against the window and the transactions in it.
    pub fn check_time(
        &mut self,
        hash: &ByteBuf,
        created: Option<u64>,
        now: u64,
    ) -> Result<(), Refusal> {
        let Some(t) = created else {
            return Ok(());
        };
        self.forget_before(now.saturating_sub(TX_WINDOW_NS + PERMITTED_DRIFT_NS));
        if t.saturating_add(TX_WINDOW_NS + PERMITTED_DRIFT_NS) < now {
            return Err(Refusal::TooOld);
        }
        if t > now.saturating_add(PERMITTED_DRIFT_NS) {
            return Err(Refusal::CreatedInFuture { ledger_time: now });
        }
        match self.recent.get(hash) {
            Some(r) => Err(Refusal::Duplicate {
                duplicate_of: r.block,
                canister: r.canister,
            }),
            None => Ok(()),
        }
    }

    fn forget_before(&mut self, time: u64) {
        while let Some((t, h)) = self.recent_by_time.first().cloned() {
            if t >= time {
                break;
            }
            self.recent_by_time.pop_first();
            self.recent.remove(&h);
        }
    }

    /// Takes the next block index, remembering the transaction if it has a time.
    pub fn block(
        &mut self,
        hash: ByteBuf,
        created: Option<u64>,
        canister: Option<Principal>,
    ) -> u64 {
        let block = self.next_block;
        self.next_block += 1;
        if let Some(t) = created {
            self.recent_by_time.insert((t, hash.clone()));
            self.recent.insert(
                hash,
                Recent {
                    created_at_time: t,
                    block,
                    canister,
                },
            );
        }
        block
    }

    pub fn credit(&mut self, a: &Account, n: u128) {
        if n == 0 {
            return;
        }
        *self.balances.entry(normal(*a)).or_insert(0) += n;
        self.total_supply += n;
    }

    /// Takes `n` from `a`, or answers its balance if it holds less.
    pub fn debit(&mut self, a: &Account, n: u128) -> Result<(), u128> {
        let key = normal(*a);
        let have = self.balances.get(&key).copied().unwrap_or(0);
        if have < n {
            return Err(have);
        }
        if have == n {
            self.balances.remove(&key);
        } else {
            self.balances.insert(key, have - n);
        }
        self.total_supply -= n;
        Ok(())
    }

    /// ICRC-1 `icrc1_transfer` from `caller`.
    pub fn transfer(
        &mut self,
        caller: &Principal,
        a: &TransferArg,
        hash: ByteBuf,
        now: u64,
    ) -> Result<u64, TransferError> {
        let from = normal(Account {
            owner: *caller,
            subaccount: a.from_subaccount,
        });
        let to = normal(a.to);
        memo_ok(&a.memo).map_err(TransferError::refused)?;
        let n = amount(&a.amount)
            .ok_or_else(|| TransferError::generic("the amount does not fit in 128 bits"))?;
        if !fee_ok(&a.fee, FEE) {
            return Err(TransferError::BadFee {
                expected_fee: FEE.into(),
            });
        }
        let total = n
            .checked_add(FEE)
            .ok_or_else(|| TransferError::generic("the amount overflows"))?;
        self.check_time(&hash, a.created_at_time, now)
            .map_err(TransferError::refused)?;
        self.debit(&from, total)
            .map_err(|b| TransferError::InsufficientFunds { balance: b.into() })?;
        self.credit(&to, n);
        Ok(self.block(hash, a.created_at_time, None))
    }

    /// ICRC-2 `icrc2_approve` from `caller`.
    pub fn approve(
        &mut self,
        caller: &Principal,
        a: &ApproveArgs,
        hash: ByteBuf,
        now: u64,
    ) -> Result<u64, ApproveError> {
        let from = normal(Account {
            owner: *caller,
            subaccount: a.from_subaccount,
        });
        let spender = normal(a.spender);
        memo_ok(&a.memo).map_err(ApproveError::refused)?;
        if from == spender {
            return Err(ApproveError::generic("an account cannot approve itself"));
        }
        if !fee_ok(&a.fee, FEE) {
            return Err(ApproveError::BadFee {
                expected_fee: FEE.into(),
            });
        }
        let n = amount(&a.amount)
            .ok_or_else(|| ApproveError::generic("the amount does not fit in 128 bits"))?;
        if a.expires_at.is_some_and(|t| t <= now) {
            return Err(ApproveError::Expired { ledger_time: now });
        }
        self.check_time(&hash, a.created_at_time, now)
            .map_err(ApproveError::refused)?;
        let current = self.allowance(
            &AllowanceArgs {
                account: from,
                spender,
            },
            now,
        );
        if let Some(expected) = &a.expected_allowance
            && *expected != current.allowance
        {
            return Err(ApproveError::AllowanceChanged {
                current_allowance: current.allowance,
            });
        }
        self.debit(&from, FEE)
            .map_err(|b| ApproveError::InsufficientFunds { balance: b.into() })?;
        self.set_allowance(&from, &spender, n, a.expires_at);
        Ok(self.block(hash, a.created_at_time, None))
    }

    fn set_allowance(
        &mut self,
        from: &Account,
        spender: &Account,
        n: u128,
        expires_at: Option<u64>,
    ) {
        let mine = self.allowances.entry(*from).or_default();
        if n == 0 {
            mine.remove(spender);
        } else {
            mine.insert(
                *spender,
                Approval {
                    amount: n,
                    expires_at,
                },
            );
        }
        if mine.is_empty() {
            self.allowances.remove(from);
        }
    }

    /// Takes `n` from the allowance `spender` has of `from`, or answers the allowance.
    pub fn spend_allowance(
        &mut self,
        from: &Account,
        spender: &Account,
        n: u128,
        now: u64,
    ) -> Result<(), u128> {
        let current = self.allowance(
            &AllowanceArgs {
                account: *from,
                spender: *spender,
            },
            now,
        );
        let have = amount(&current.allowance).unwrap_or(0);
        if have < n {
            return Err(have);
        }
        self.set_allowance(from, spender, have - n, current.expires_at);
        Ok(())
    }

    /// ICRC-2 `icrc2_transfer_from` by `caller`.
    pub fn transfer_from(
        &mut self,
        caller: &Principal,
        a: &TransferFromArgs,
        hash: ByteBuf,
        now: u64,
    ) -> Result<u64, TransferFromError> {
        let spender = normal(Account {
            owner: *caller,
            subaccount: a.spender_subaccount,
        });
        let (from, to) = (normal(a.from), normal(a.to));
        memo_ok(&a.memo).map_err(TransferFromError::refused)?;
        if !fee_ok(&a.fee, FEE) {
            return Err(TransferFromError::BadFee {
                expected_fee: FEE.into(),
            });
        }
        let n = amount(&a.amount)
            .ok_or_else(|| TransferFromError::generic("the amount does not fit in 128 bits"))?;
        let total = n
            .checked_add(FEE)
            .ok_or_else(|| TransferFromError::generic("the amount overflows"))?;
        self.check_time(&hash, a.created_at_time, now)
            .map_err(TransferFromError::refused)?;
        if self.balance(&from) < total {
            return Err(TransferFromError::InsufficientFunds {
                balance: self.balance(&from).into(),
            });
        }
        if spender != from {
            self.spend_allowance(&from, &spender, total, now)
                .map_err(|a| TransferFromError::InsufficientAllowance {
                    allowance: a.into(),
                })?;
        }
        self.debit(&from, total)
            .map_err(|b| TransferFromError::InsufficientFunds { balance: b.into() })?;
        self.credit(&to, n);
        Ok(self.block(hash, a.created_at_time, None))
    }
}

/// The system canisters' state. Encoded as CBOR inside the state's encoding, so fields added
/// later default when absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemState {
    #[serde(default)]
    pub ledger: Ledger,
}

/// The subnet's id as the registry gives it (replica-local, set by the replica before it
/// executes; the same on every replica). Not part of the state: equal whatever it holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct KnownSubnet(pub Option<Principal>);

impl PartialEq for KnownSubnet {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for KnownSubnet {}

thread_local! {
    /// Set while an encoding of checkpoint format 3 or older is read (or, in tests, written):
    /// the state carries no [`SystemState`] there.
    static BEFORE_SYSTEM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` reading (or writing) the encoding of checkpoint format 3 or older.
pub(crate) fn before_system<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            BEFORE_SYSTEM.with(|a| a.set(self.0));
        }
    }
    let _reset = Reset(BEFORE_SYSTEM.with(|a| a.replace(true)));
    f()
}

pub(crate) fn system_out<S: serde::Serializer>(
    system: &std::sync::Arc<SystemState>,
    s: S,
) -> Result<S::Ok, S::Error> {
    if BEFORE_SYSTEM.with(|a| a.get()) {
        return s.serialize_unit();
    }
    let mut cbor = Vec::new();
    ciborium::into_writer(&**system, &mut cbor).map_err(serde::ser::Error::custom)?;
    serde_bytes::Bytes::new(&cbor).serialize(s)
}

pub(crate) fn system_in<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::sync::Arc<SystemState>, D::Error> {
    if BEFORE_SYSTEM.with(|a| a.get()) {
        return <()>::deserialize(d).map(|()| Default::default());
    }
    let cbor = serde_bytes::ByteBuf::deserialize(d)?;
    ciborium::from_reader(cbor.as_slice())
        .map(std::sync::Arc::new)
        .map_err(serde::de::Error::custom)
}

//! The cycles ledger's endpoints (`um5iw-rqaaa-aaaaq-qaaba-cai`), with its published Candid
//! interface: ICRC-1 and ICRC-2 on the book of `ledger.rs`, plus what moves cycles between the
//! book and canisters: `deposit` (a canister's attached cycles into an account), `withdraw`
//! and `withdraw_from` (an account's cycles into a canister of this subnet), and
//! `create_canister` / `create_canister_from` (a new canister paid from an account). Each
//! charges the ledger fee, except deposits; a request that fails charges nothing.

use candid::{Nat, Principal};
use icrc_ledger_types::icrc::generic_metadata_value::MetadataValue;
use icrc_ledger_types::icrc1::account::Account;
use icrc_ledger_types::icrc1::transfer::TransferArg;
use icrc_ledger_types::icrc2::allowance::AllowanceArgs;
use icrc_ledger_types::icrc2::approve::ApproveArgs;
use icrc_ledger_types::icrc2::transfer_from::TransferFromArgs;
use serde_bytes::ByteBuf;

use super::cycles_types::*;
use super::{SystemView, cycles_ledger, decode, encode};
use crate::ids::canister_index;
use crate::ledger::{DECIMALS, FEE, Ledger, MAX_MEMO_BYTES, Refusal, normal, tx_hash};
use crate::limits::CREATE_CANISTER_FEE;
use crate::management::{ChangeOrigin, FromCanisterRecord, ProvisionalCreateCanisterArgs};
use crate::reject::Reject;
use crate::state::SubnetState;

/// An amount of cycles as a request gives it.
fn cycles_amount(n: &Nat) -> Result<u128, Unpaid> {
    u128::try_from(&n.0).map_err(|_| {
        Unpaid::Refused(Refusal::Generic(
            "the amount does not fit in 128 bits".into(),
        ))
    })
}

fn nat(n: u64) -> Nat {
    n.into()
}

impl SystemView<'_> {
    /// The cycles ledger's query methods (also answered as calls).
    pub(super) fn cycles_ledger_read(
        &self,
        method: &str,
        arg: &[u8],
    ) -> Option<Result<Vec<u8>, Reject>> {
        let ledger = &self.system.ledger;
        let id = cycles_ledger();
        let reply = match method {
            "icrc1_name" => encode(&"Cycles"),
            "icrc1_symbol" => encode(&"TCYCLES"),
            "icrc1_decimals" => encode(&DECIMALS),
            "icrc1_fee" => encode(&Nat::from(FEE)),
            "icrc1_total_supply" => encode(&Nat::from(ledger.total_supply)),
            "icrc1_minting_account" => encode(&None::<Account>),
            "icrc1_metadata" => encode(&vec![
                (
                    "icrc1:decimals".to_string(),
                    MetadataValue::Nat(DECIMALS.into()),
                ),
                ("icrc1:name".into(), MetadataValue::Text("Cycles".into())),
                ("icrc1:symbol".into(), MetadataValue::Text("TCYCLES".into())),
                ("icrc1:fee".into(), MetadataValue::Nat(FEE.into())),
                (
                    "icrc1:max_memo_length".into(),
                    MetadataValue::Nat(MAX_MEMO_BYTES.into()),
                ),
            ]),
            "icrc1_supported_standards" | "icrc10_supported_standards" => encode(&vec![
                SupportedStandard {
                    name: "ICRC-1".into(),
                    url: "https://github.com/dfinity/ICRC-1/tree/main/standards/ICRC-1".into(),
                },
                SupportedStandard {
                    name: "ICRC-2".into(),
                    url: "https://github.com/dfinity/ICRC-1/tree/main/standards/ICRC-2".into(),
                },
            ]),
            "icrc1_balance_of" => decode::<Account>(&id, method, arg)
                .and_then(|a| encode(&Nat::from(ledger.balance(&a)))),
            "icrc2_allowance" => decode::<AllowanceArgs>(&id, method, arg)
                .and_then(|a| encode(&ledger.allowance(&a, self.time_ns))),
            _ => return None,
        };
        Some(reply)
    }
}

impl SubnetState {
    /// A call to the cycles ledger from `caller` with `cycles` attached; answers the reply
    /// and the cycles to refund.
    pub(super) fn cycles_ledger_call(
        &mut self,
        caller: &Principal,
        method: &str,
        arg: &[u8],
        cycles: u128,
    ) -> (Result<Vec<u8>, Reject>, u128) {
        let id = cycles_ledger();
        let now = self.time_ns;
        let hash = tx_hash(caller, method, arg);
        let reply = match method {
            "icrc1_transfer" => decode::<TransferArg>(&id, method, arg).and_then(|a| {
                let r = self.ledger().transfer(caller, &a, hash, now).map(nat);
                encode(&r)
            }),
            "icrc2_approve" => decode::<ApproveArgs>(&id, method, arg).and_then(|a| {
                let r = self.ledger().approve(caller, &a, hash, now).map(nat);
                encode(&r)
            }),
            "icrc2_transfer_from" => decode::<TransferFromArgs>(&id, method, arg).and_then(|a| {
                let r = self.ledger().transfer_from(caller, &a, hash, now).map(nat);
                encode(&r)
            }),
            "deposit" => {
                return match decode::<DepositArgs>(&id, method, arg) {
                    Ok(a) => self.deposit(a, cycles),
                    Err(r) => (Err(r), cycles),
                };
            }
            "withdraw" => decode::<WithdrawArgs>(&id, method, arg).and_then(|a| {
                let payer = Payer::own(caller, a.from_subaccount);
                let r = self.withdraw(payer, &a.to, &a.amount, a.created_at_time, hash);
                encode(&r.map(nat).map_err(|e| withdraw_error(e, a.to)))
            }),
            "withdraw_from" => decode::<WithdrawFromArgs>(&id, method, arg).and_then(|a| {
                let payer = Payer::spender(a.from, caller, a.spender_subaccount);
                let r = self.withdraw(payer, &a.to, &a.amount, a.created_at_time, hash);
                encode(&r.map(nat).map_err(|e| withdraw_from_error(e, a.to)))
            }),
            "create_canister" => decode::<CreateCanisterArgs>(&id, method, arg).and_then(|a| {
                let payer = Payer::own(caller, a.from_subaccount);
                let r = self.create_paid(
                    caller,
                    payer,
                    &a.amount,
                    a.created_at_time,
                    a.creation_args,
                    hash,
                );
                encode(&r.map_err(create_error))
            }),
            "create_canister_from" => {
                decode::<CreateCanisterFromArgs>(&id, method, arg).and_then(|a| {
                    let payer = Payer::spender(a.from, caller, a.spender_subaccount);
                    let r = self.create_paid(
                        caller,
                        payer,
                        &a.amount,
                        a.created_at_time,
                        a.creation_args,
                        hash,
                    );
                    encode(&r.map_err(create_from_error))
                })
            }
            _ => match self.system_view().cycles_ledger_read(method, arg) {
                Some(r) => r,
                None => Err(Reject::new(
                    536,
                    format!("Canister {id} has no update method '{method}'"),
                )),
            },
        };
        (reply, cycles)
    }

    fn ledger(&mut self) -> &mut Ledger {
        &mut std::sync::Arc::make_mut(&mut self.system).ledger
    }

    /// `deposit`: the attached cycles (at least the fee) into an account.
    fn deposit(&mut self, a: DepositArgs, cycles: u128) -> (Result<Vec<u8>, Reject>, u128) {
        let id = cycles_ledger();
        if a.memo.as_ref().is_some_and(|m| m.len() > MAX_MEMO_BYTES) {
            return (
                Err(Reject::by_canister(format!(
                    "the memo is longer than {MAX_MEMO_BYTES} bytes"
                ))),
                cycles,
            );
        }
        if cycles < FEE {
            return (
                Err(Reject::by_canister(format!(
                    "{id}: a deposit needs at least {FEE} cycles attached, got {cycles}"
                ))),
                cycles,
            );
        }
        let ledger = self.ledger();
        ledger.credit(&a.to, cycles);
        let block = ledger.block(ByteBuf::new(), None, None);
        let balance = ledger.balance(&a.to);
        let reply = encode(&DepositResult {
            balance: balance.into(),
            block_index: block.into(),
        });
        (reply, 0)
    }

    /// Checks a payment of `n` plus the fee by `payer`, without taking it.
    fn check_payment(
        &mut self,
        payer: &Payer,
        n: u128,
        created: Option<u64>,
        hash: &ByteBuf,
    ) -> Result<u128, Unpaid> {
        let now = self.time_ns;
        let ledger = self.ledger();
        let total = n
            .checked_add(FEE)
            .ok_or_else(|| Unpaid::Refused(Refusal::Generic("the amount overflows".into())))?;
        ledger
            .check_time(hash, created, now)
            .map_err(Unpaid::Refused)?;
        let balance = ledger.balance(&payer.from);
        if balance < total {
            return Err(Unpaid::Funds(balance));
        }
        if let Some(spender) = &payer.spender
            && normal(*spender) != normal(payer.from)
        {
            let allowed = ledger.allowance(
                &AllowanceArgs {
                    account: payer.from,
                    spender: *spender,
                },
                now,
            );
            let allowed = u128::try_from(&allowed.allowance.0).unwrap_or(u128::MAX);
            if allowed < total {
                return Err(Unpaid::Allowance(allowed));
            }
        }
        Ok(total)
    }

    /// Takes a payment [`Self::check_payment`] allowed.
    fn take_payment(&mut self, payer: &Payer, total: u128) {
        let now = self.time_ns;
        let ledger = self.ledger();
        if let Some(spender) = &payer.spender
            && normal(*spender) != normal(payer.from)
        {
            let _ = ledger.spend_allowance(&payer.from, spender, total, now);
        }
        let _ = ledger.debit(&payer.from, total);
    }

    /// `withdraw` / `withdraw_from`: `amount` into canister `to` of this subnet.
    fn withdraw(
        &mut self,
        payer: Payer,
        to: &Principal,
        amount: &Nat,
        created: Option<u64>,
        hash: ByteBuf,
    ) -> Result<u64, Unpaid> {
        let n = cycles_amount(amount)?;
        if canister_index(to).is_none() {
            return Err(Unpaid::Failed(
                RejectionCode::DestinationInvalid,
                format!("{to} is not a canister"),
            ));
        }
        let total = self.check_payment(&payer, n, created, &hash)?;
        let Some(c) = self.canisters.get_mut(to) else {
            return Err(Unpaid::Failed(
                RejectionCode::DestinationInvalid,
                format!("Canister {to} not found"),
            ));
        };
        c.cycles = c.cycles.saturating_add(n);
        self.take_payment(&payer, total);
        Ok(self.ledger().block(hash, created, None))
    }

    /// `create_canister` / `create_canister_from`: a canister with `amount` cycles (less the
    /// subnet's creation fee), controlled by `caller` unless the settings say otherwise.
    fn create_paid(
        &mut self,
        caller: &Principal,
        payer: Payer,
        amount: &Nat,
        created: Option<u64>,
        args: Option<CmcCreateCanisterArgs>,
        hash: ByteBuf,
    ) -> Result<CreateCanisterSuccess, Unpaid> {
        let n = cycles_amount(amount)?;
        let (settings, selection) = args.map_or((None, None), |a| (a.settings, a.subnet_selection));
        if let Some(why) = self.not_here(selection.as_ref()) {
            return Err(Unpaid::Failed(RejectionCode::CanisterReject, why));
        }
        let total = self.check_payment(&payer, n, created, &hash)?;
        if n < CREATE_CANISTER_FEE {
            return Err(Unpaid::Failed(
                RejectionCode::CanisterReject,
                format!("creating a canister costs {CREATE_CANISTER_FEE} cycles, {n} were offered"),
            ));
        }
        let id = self
            .create(
                caller,
                // On the IC the cycles-minting canister creates it for the ledger.
                &ChangeOrigin::FromCanister(FromCanisterRecord {
                    canister_id: super::cycles_minting_canister(),
                    canister_version: None,
                }),
                ProvisionalCreateCanisterArgs {
                    amount: Some((n - CREATE_CANISTER_FEE).into()),
                    settings,
                    specified_id: None,
                },
            )
            .map_err(|r| Unpaid::Failed(RejectionCode::CanisterReject, r.message))?;
        self.take_payment(&payer, total);
        let block = self.ledger().block(hash, created, Some(id));
        Ok(CreateCanisterSuccess {
            block_id: block.into(),
            canister_id: id,
        })
    }

    /// Why a canister cannot be created where `selection` asks, if it cannot.
    fn not_here(&self, selection: Option<&SubnetSelection>) -> Option<String> {
        match selection? {
            SubnetSelection::Subnet { subnet } => match self.subnet_id.0 {
                Some(me) if me == *subnet => None,
                Some(me) => Some(format!("subnet {subnet} is not this ledger's subnet {me}")),
                None => Some("this replica does not know its subnet's id yet".into()),
            },
            SubnetSelection::Filter(SubnetFilter { subnet_type: None }) => None,
            SubnetSelection::Filter(SubnetFilter {
                subnet_type: Some(t),
            }) => Some(format!("no subnet of type {t:?}: this subnet has no type")),
        }
    }
}

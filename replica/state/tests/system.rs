//! The system canisters IC tools call, native on the subnet state machine: the cycles ledger
//! (ICRC-1 and ICRC-2 with its fee, the anonymous faucet, deduplication,
//! deposits by canisters, withdrawals into canisters, canister creation paid from an account)
//! and the cycles-minting canister's subnet lookups. Every refused request changes nothing.

mod common;

use candid::{CandidType, Decode, Deserialize, Encode, Nat, Principal};
use common::*;
use icrc_ledger_types::icrc1::account::Account;
use icrc_ledger_types::icrc1::transfer::{TransferArg, TransferError};
use icrc_ledger_types::icrc2::allowance::{Allowance, AllowanceArgs};
use icrc_ledger_types::icrc2::approve::{ApproveArgs, ApproveError};
use icrc_ledger_types::icrc2::transfer_from::{TransferFromArgs, TransferFromError};
use thicket_execution::{IngressStatus, StateMachine};
use thicket_state::SubnetState;
use thicket_state::management::{CanisterSettings, InstallMode};
use thicket_state::system::{
    SubnetSelection, SystemCanister, cycles_ledger, cycles_minting_canister,
};

const T: u128 = 1_000_000_000_000;
const FEE: u128 = 100_000_000;
const USER: &[u8] = &[0x11, 0x22, 0x01];
const FRIEND: &[u8] = &[0x33, 0x44, 0x01];

fn account(owner: &[u8]) -> Account {
    Account {
        owner: Principal::from_slice(owner),
        subaccount: None,
    }
}

fn transfer(to: &[u8], amount: u128) -> TransferArg {
    TransferArg {
        from_subaccount: None,
        to: account(to),
        fee: None,
        created_at_time: None,
        memo: None,
        amount: amount.into(),
    }
}

#[derive(CandidType, Deserialize, Debug)]
struct CreationArgs {
    settings: Option<CanisterSettings>,
    subnet_selection: Option<SubnetSelection>,
}

#[derive(CandidType, Deserialize)]
struct CreateCanisterArgs {
    from_subaccount: Option<[u8; 32]>,
    created_at_time: Option<u64>,
    amount: Nat,
    creation_args: Option<CreationArgs>,
}

#[derive(CandidType, Deserialize, Debug)]
struct Created {
    block_id: Nat,
    canister_id: Principal,
}

/// The errors these tests expect (Candid decodes a variant by its tag, and a record by the
/// fields asked for).
#[derive(CandidType, Deserialize, Debug)]
enum CreateError {
    FailedToCreate { error: String },
    InsufficientFunds { balance: Nat },
}

#[derive(CandidType, Deserialize, Debug)]
enum WithdrawError {
    FailedToWithdraw { rejection_reason: String },
    InvalidReceiver { receiver: Principal },
}

#[derive(CandidType, Deserialize)]
struct WithdrawArgs {
    amount: Nat,
    from_subaccount: Option<[u8; 32]>,
    to: Principal,
    created_at_time: Option<u64>,
}

#[derive(CandidType, Deserialize)]
struct DepositArgs {
    to: Account,
    memo: Option<serde_bytes::ByteBuf>,
}

#[derive(CandidType, Deserialize, Debug)]
struct DepositResult {
    balance: Nat,
    block_index: Nat,
}

fn subnet() -> (Subnet, Principal) {
    let mut s = Subnet::new();
    let me = Principal::self_authenticating([7u8; 133]);
    s.state.set_subnet_id(me);
    (s, me)
}

fn balance(s: &Subnet, owner: &[u8]) -> u128 {
    let arg = Encode!(&account(owner)).expect("encodes");
    let reply = s
        .state
        .query_view()
        .system_query(SystemCanister::CyclesLedger, "icrc1_balance_of", &arg)
        .expect("a balance");
    let n = Decode!(&reply, Nat).expect("a nat");
    u128::try_from(&n.0).expect("fits")
}

fn ledger_call<R: CandidType + for<'a> Deserialize<'a>>(
    s: &mut Subnet,
    sender: &[u8],
    method: &str,
    arg: Vec<u8>,
) -> R {
    let reply = s.ok(sender, &cycles_ledger(), method, arg);
    Decode!(&reply, R).unwrap_or_else(|e| panic!("{method}: {e}"))
}

#[test]
fn the_cycles_ledger_pays_from_the_faucet_and_moves_cycles_with_its_fee() {
    let (mut s, _) = subnet();
    // The faucet: the anonymous principal's account is funded; its transfers pay the fee.
    let faucet = balance(&s, ANON);
    let r: Result<Nat, TransferError> = ledger_call(
        &mut s,
        ANON,
        "icrc1_transfer",
        Encode!(&transfer(USER, 100 * T)).expect("arg"),
    );
    assert_eq!(r, Ok(Nat::from(1u64)));
    assert_eq!(balance(&s, USER), 100 * T);
    assert_eq!(balance(&s, ANON), faucet - 100 * T - FEE);
    let supply = s.state.system().ledger.total_supply;

    // A transfer costs its fee, which is burned.
    let r: Result<Nat, TransferError> = ledger_call(
        &mut s,
        USER,
        "icrc1_transfer",
        Encode!(&transfer(FRIEND, T)).expect("arg"),
    );
    assert_eq!(r, Ok(Nat::from(2u64)));
    assert_eq!((balance(&s, USER), balance(&s, FRIEND)), (99 * T - FEE, T));
    assert_eq!(s.state.system().ledger.total_supply, supply - FEE);

    // Refused transfers change nothing: a wrong fee, too little.
    let mut bad = transfer(FRIEND, T);
    bad.fee = Some(1u64.into());
    let r: Result<Nat, TransferError> =
        ledger_call(&mut s, USER, "icrc1_transfer", Encode!(&bad).expect("arg"));
    assert_eq!(
        r,
        Err(TransferError::BadFee {
            expected_fee: FEE.into()
        })
    );
    let r: Result<Nat, TransferError> = ledger_call(
        &mut s,
        FRIEND,
        "icrc1_transfer",
        Encode!(&transfer(USER, T)).expect("arg"),
    );
    assert_eq!(
        r,
        Err(TransferError::InsufficientFunds { balance: T.into() })
    );
    assert_eq!((balance(&s, USER), balance(&s, FRIEND)), (99 * T - FEE, T));

    // A transfer with a creation time is done once: the same one again is a duplicate, an
    // old one too old.
    let mut timed = transfer(FRIEND, T);
    timed.created_at_time = Some(T0 + 1_000_000_000);
    let arg = Encode!(&timed).expect("arg");
    let first: Result<Nat, TransferError> =
        ledger_call(&mut s, USER, "icrc1_transfer", arg.clone());
    let again: Result<Nat, TransferError> = ledger_call(&mut s, USER, "icrc1_transfer", arg);
    assert_eq!(
        again,
        Err(TransferError::Duplicate {
            duplicate_of: first.expect("done")
        })
    );
    timed.created_at_time = Some(T0 - 2 * 24 * 3600 * 1_000_000_000);
    let r: Result<Nat, TransferError> = ledger_call(
        &mut s,
        USER,
        "icrc1_transfer",
        Encode!(&timed).expect("arg"),
    );
    assert_eq!(r, Err(TransferError::TooOld));
    assert_eq!(balance(&s, FRIEND), 2 * T);

    // Subaccounts are accounts of their own; the default one is the principal's.
    let mut to_sub = transfer(FRIEND, T);
    to_sub.to.subaccount = Some([1; 32]);
    let r: Result<Nat, TransferError> = ledger_call(
        &mut s,
        FRIEND,
        "icrc1_transfer",
        Encode!(&to_sub).expect("arg"),
    );
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(balance(&s, FRIEND), T - FEE);
    let mut zero = account(FRIEND);
    zero.subaccount = Some([0; 32]);
    assert_eq!(s.state.system().ledger.balance(&zero), T - FEE);

    // ICRC-2: an approval costs the fee; the spender moves cycles within it.
    let approve = ApproveArgs {
        from_subaccount: None,
        spender: account(FRIEND),
        amount: (5 * T).into(),
        expected_allowance: None,
        expires_at: None,
        fee: None,
        memo: None,
        created_at_time: None,
    };
    let r: Result<Nat, ApproveError> = ledger_call(
        &mut s,
        USER,
        "icrc2_approve",
        Encode!(&approve).expect("arg"),
    );
    assert!(r.is_ok(), "{r:?}");
    let from_user = |amount: u128| TransferFromArgs {
        spender_subaccount: None,
        from: account(USER),
        to: account(OTHER),
        amount: amount.into(),
        fee: None,
        memo: None,
        created_at_time: None,
    };
    let r: Result<Nat, TransferFromError> = ledger_call(
        &mut s,
        FRIEND,
        "icrc2_transfer_from",
        Encode!(&from_user(2 * T)).expect("arg"),
    );
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(balance(&s, OTHER), 2 * T);
    let left = 3 * T - FEE;
    let r: Result<Nat, TransferFromError> = ledger_call(
        &mut s,
        FRIEND,
        "icrc2_transfer_from",
        Encode!(&from_user(3 * T)).expect("arg"),
    );
    assert_eq!(
        r,
        Err(TransferFromError::InsufficientAllowance {
            allowance: left.into()
        })
    );
    let allowance = Encode!(&AllowanceArgs {
        account: account(USER),
        spender: account(FRIEND),
    })
    .expect("arg");
    let a: Allowance = ledger_call(&mut s, OTHER, "icrc2_allowance", allowance);
    assert_eq!(a.allowance, left);
    assert_eq!(
        balance(&s, USER),
        99 * T - FEE - T - FEE - FEE - 2 * T - FEE
    );

    // Reads answer as queries too; unknown methods and bad arguments are refused.
    let view = s.state.query_view();
    let fee = view
        .system_query(
            SystemCanister::CyclesLedger,
            "icrc1_fee",
            &Encode!().expect("arg"),
        )
        .expect("a fee");
    assert_eq!(Decode!(&fee, Nat).expect("nat"), FEE);
    let r = view.system_query(
        SystemCanister::CyclesLedger,
        "icrc1_transfer",
        &Encode!().expect("arg"),
    );
    assert_eq!(r.expect_err("not a query").error_code, "IC0536");
    let (_, message, code) = s.rejected(USER, &cycles_ledger(), "icrc1_transfer", b"DIDL".to_vec());
    assert_eq!(code, "IC0503", "{message}");
    let (_, _, code) = s.rejected(
        USER,
        &cycles_ledger(),
        "mint_for_free",
        Encode!().expect("arg"),
    );
    assert_eq!(code, "IC0536");

    // The book is part of the state: a checkpoint carries it.
    let again = SubnetState::decode(&s.state.encode()).expect("decodes");
    assert_eq!(again.system(), s.state.system());
}

#[test]
fn canisters_are_created_and_topped_up_from_an_account_and_deposit_into_one() {
    let (mut s, me) = subnet();
    let _: Result<Nat, TransferError> = ledger_call(
        &mut s,
        ANON,
        "icrc1_transfer",
        Encode!(&transfer(USER, 10 * T)).expect("arg"),
    );
    let create = |amount: u128, subnet: Principal| {
        Encode!(&CreateCanisterArgs {
            from_subaccount: None,
            created_at_time: None,
            amount: amount.into(),
            creation_args: Some(CreationArgs {
                settings: None,
                subnet_selection: Some(SubnetSelection::Subnet { subnet }),
            }),
        })
        .expect("arg")
    };

    // The CMC names this subnet, where the ledger creates canisters: the new canister is the
    // caller's, with the amount less the creation fee.
    let reply = s.ok(
        USER,
        &cycles_minting_canister(),
        "get_default_subnets",
        Encode!().expect("arg"),
    );
    assert_eq!(Decode!(&reply, Vec<Principal>).expect("subnets"), vec![me]);
    let created: Result<Created, candid::Reserved> =
        ledger_call(&mut s, USER, "create_canister", create(2 * T, me));
    let id = created.expect("created").canister_id;
    let c = s.state.canister(&id).expect("the canister");
    assert_eq!(c.cycles, 2 * T - 500_000_000_000);
    assert!(c.controllers.contains(&Principal::from_slice(USER)));
    assert_eq!(balance(&s, USER), 8 * T - FEE);

    // Elsewhere, or beyond the balance, nothing is created and nothing is charged.
    let other = Principal::self_authenticating([8u8; 133]);
    let canisters = s.state.canisters().len();
    let r: Result<Created, CreateError> =
        ledger_call(&mut s, USER, "create_canister", create(2 * T, other));
    assert!(
        matches!(&r, Err(CreateError::FailedToCreate { error }) if error.contains("not this ledger's subnet")),
        "{r:?}"
    );
    let r: Result<Created, CreateError> =
        ledger_call(&mut s, USER, "create_canister", create(9 * T, me));
    assert!(
        matches!(&r, Err(CreateError::InsufficientFunds { balance }) if *balance == 8 * T - FEE),
        "{r:?}"
    );
    assert_eq!(
        (s.state.canisters().len(), balance(&s, USER)),
        (canisters, 8 * T - FEE)
    );

    // A withdrawal tops a canister up; one to a canister that does not exist takes nothing.
    let withdraw = |to: Principal| {
        Encode!(&WithdrawArgs {
            amount: T.into(),
            from_subaccount: None,
            to,
            created_at_time: None,
        })
        .expect("arg")
    };
    let r: Result<Nat, WithdrawError> = ledger_call(&mut s, USER, "withdraw", withdraw(id));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        s.state.canister(&id).expect("it").cycles,
        3 * T - 500_000_000_000
    );
    let gone = thicket_state::ids::canister_id(0x10F_FFFF);
    let r: Result<Nat, WithdrawError> = ledger_call(&mut s, USER, "withdraw", withdraw(gone));
    assert!(
        matches!(&r, Err(WithdrawError::FailedToWithdraw { rejection_reason }) if rejection_reason.contains("not found")),
        "{r:?}"
    );
    let r: Result<Nat, WithdrawError> = ledger_call(
        &mut s,
        USER,
        "withdraw",
        withdraw(Principal::from_slice(FRIEND)),
    );
    assert!(
        matches!(r, Err(WithdrawError::InvalidReceiver { .. })),
        "{r:?}"
    );
    assert_eq!(balance(&s, USER), 7 * T - 2 * FEE);

    // A canister deposits the 1T cycles it attaches into an account (what `icp canister delete`
    // does to recover them).
    let wasm = relay(&cycles_ledger(), "deposit", 1_000_000_000_000);
    let installed = s.install(USER, id, InstallMode::Install, &wasm);
    assert!(
        matches!(installed, IngressStatus::Replied { .. }),
        "{installed:?}"
    );
    let before = s.state.canister(&id).expect("it").cycles;
    let arg = Encode!(&DepositArgs {
        to: account(FRIEND),
        memo: None,
    })
    .expect("arg");
    let (_, ids) = s.batch(vec![(USER, id, "relay", arg)]);
    for _ in 0..5 {
        s.batch(Vec::new());
    }
    let reply = match s.state.ingress_status(&ids[0]) {
        Some(IngressStatus::Replied { reply, .. }) => reply.clone(),
        other => panic!("the deposit is answered: {other:?}"),
    };
    let d = Decode!(&reply, DepositResult).expect("a deposit result");
    assert_eq!(d.balance, T);
    assert_eq!(balance(&s, FRIEND), T);
    assert_eq!(s.state.canister(&id).expect("it").cycles, before - T);

    // ICP is not converted here: the CMC says where cycles come from.
    let (code, message, _) = s.rejected(
        USER,
        &cycles_minting_canister(),
        "notify_mint_cycles",
        Encode!().expect("arg"),
    );
    assert_eq!(code, 4);
    assert!(message.contains(&cycles_ledger().to_text()), "{message}");
    let rate = s.state.query_view().system_query(
        thicket_state::system::SystemCanister::CyclesMinting,
        "get_icp_xdr_conversion_rate",
        &Encode!().expect("arg"),
    );
    let r = rate.expect_err("no ICP, no rate");
    assert!(r.message.contains("converts no ICP"), "{}", r.message);
}

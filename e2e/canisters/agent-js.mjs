// Drives a Thicket subnet with an unmodified JavaScript IC agent, with its default checks
// (certificates against the fetched root key, query signatures against the certified node
// keys): creates a canister, installs WASM, calls and queries it, reads its status and its log
// (the management canister's fetch_canister_logs query). The agent is @dfinity/agent, or with
// --core @icp-sdk/core (the current JavaScript SDK), which also pays for the canister with
// cycles from the cycles ledger.
//   node agent-js.mjs URL WASM [--core]
// Prints a JSON summary; exits non-zero if anything is not as expected.
import { readFileSync } from 'node:fs';

const [url, wasmPath, flavour] = process.argv.slice(2);
if (!url || !wasmPath) {
  console.error('usage: node agent-js.mjs URL WASM [--core]');
  process.exit(2);
}
const core = flavour === '--core';
const { Actor, HttpAgent } = await import(core ? '@icp-sdk/core/agent' : '@dfinity/agent');
const { IDL } = await import(core ? '@icp-sdk/core/candid' : '@dfinity/candid');
const { Principal } = await import(core ? '@icp-sdk/core/principal' : '@dfinity/principal');

const management = ({ IDL }) => {
  const settings = IDL.Record({ controllers: IDL.Opt(IDL.Vec(IDL.Principal)) });
  const mode = IDL.Variant({
    install: IDL.Null,
    reinstall: IDL.Null,
    upgrade: IDL.Opt(
      IDL.Record({
        skip_pre_upgrade: IDL.Opt(IDL.Bool),
        wasm_memory_persistence: IDL.Opt(IDL.Variant({ keep: IDL.Null, replace: IDL.Null })),
      }),
    ),
  });
  return IDL.Service({
    provisional_create_canister_with_cycles: IDL.Func(
      [
        IDL.Record({
          amount: IDL.Opt(IDL.Nat),
          settings: IDL.Opt(settings),
          specified_id: IDL.Opt(IDL.Principal),
        }),
      ],
      [IDL.Record({ canister_id: IDL.Principal })],
      [],
    ),
    // A part of the current status record: Candid lets a reader skip the fields it does not
    // name.
    canister_status: IDL.Func(
      [IDL.Record({ canister_id: IDL.Principal })],
      [
        IDL.Record({
          status: IDL.Variant({ running: IDL.Null, stopping: IDL.Null, stopped: IDL.Null }),
          module_hash: IDL.Opt(IDL.Vec(IDL.Nat8)),
          version: IDL.Nat64,
          memory_metrics: IDL.Record({ wasm_binary_size: IDL.Nat }),
        }),
      ],
      [],
    ),
    fetch_canister_logs: IDL.Func(
      [IDL.Record({ canister_id: IDL.Principal })],
      [
        IDL.Record({
          canister_log_records: IDL.Vec(
            IDL.Record({ idx: IDL.Nat64, timestamp_nanos: IDL.Nat64, content: IDL.Vec(IDL.Nat8) }),
          ),
        }),
      ],
      ['query'],
    ),
    install_code: IDL.Func(
      [
        IDL.Record({
          mode,
          canister_id: IDL.Principal,
          wasm_module: IDL.Vec(IDL.Nat8),
          arg: IDL.Vec(IDL.Nat8),
        }),
      ],
      [],
      [],
    ),
  });
};

const counter = ({ IDL }) =>
  IDL.Service({
    inc: IDL.Func([], [IDL.Nat], []),
    get: IDL.Func([], [IDL.Nat], ['query']),
    greet: IDL.Func([IDL.Text], [IDL.Text], []),
  });

const agent = await HttpAgent.create({ host: url, shouldFetchRootKey: true });
const mgmt = (effectiveCanisterId) =>
  Actor.createActor(management, {
    agent,
    canisterId: Principal.managementCanister(),
    effectiveCanisterId,
  });

// The cycles ledger (with the current SDK): the anonymous identity is the subnet's faucet; a
// canister is paid for as `icp canister create` does.
const cyclesLedger = ({ IDL }) => {
  const Account = IDL.Record({ owner: IDL.Principal, subaccount: IDL.Opt(IDL.Vec(IDL.Nat8)) });
  return IDL.Service({
    icrc1_balance_of: IDL.Func([Account], [IDL.Nat], ['query']),
    icrc1_transfer: IDL.Func(
      [
        IDL.Record({
          from_subaccount: IDL.Opt(IDL.Vec(IDL.Nat8)),
          to: Account,
          amount: IDL.Nat,
          fee: IDL.Opt(IDL.Nat),
          memo: IDL.Opt(IDL.Vec(IDL.Nat8)),
          created_at_time: IDL.Opt(IDL.Nat64),
        }),
      ],
      [IDL.Variant({ Ok: IDL.Nat, Err: IDL.Reserved })],
      [],
    ),
    create_canister: IDL.Func(
      [
        IDL.Record({
          from_subaccount: IDL.Opt(IDL.Vec(IDL.Nat8)),
          created_at_time: IDL.Opt(IDL.Nat64),
          amount: IDL.Nat,
          creation_args: IDL.Opt(
            IDL.Record({
              settings: IDL.Opt(IDL.Record({ controllers: IDL.Opt(IDL.Vec(IDL.Principal)) })),
              subnet_selection: IDL.Opt(
                IDL.Variant({
                  Subnet: IDL.Record({ subnet: IDL.Principal }),
                  Filter: IDL.Record({ subnet_type: IDL.Opt(IDL.Text) }),
                }),
              ),
            }),
          ),
        }),
      ],
      [
        IDL.Variant({
          Ok: IDL.Record({ block_id: IDL.Nat, canister_id: IDL.Principal }),
          Err: IDL.Variant({
            InsufficientFunds: IDL.Record({ balance: IDL.Nat }),
            FailedToCreate: IDL.Record({ error: IDL.Text }),
            GenericError: IDL.Record({ message: IDL.Text, error_code: IDL.Nat }),
          }),
        }),
      ],
      [],
    ),
  });
};
const cmc = ({ IDL }) =>
  IDL.Service({ get_default_subnets: IDL.Func([], [IDL.Vec(IDL.Principal)], ['query']) });

let canister_id;
let paid = null;
if (core) {
  // A new identity of its own (other tests spend from the faucet meanwhile), given 10T by the
  // faucet, then paying 2T and the fee for the canister.
  const { Ed25519KeyIdentity } = await import('@icp-sdk/core/identity');
  const identity = Ed25519KeyIdentity.generate();
  const own = await HttpAgent.create({ host: url, shouldFetchRootKey: true, identity });
  const ledgerOf = (a) =>
    Actor.createActor(cyclesLedger, {
      agent: a,
      canisterId: Principal.fromText('um5iw-rqaaa-aaaaq-qaaba-cai'),
    });
  const me = { owner: identity.getPrincipal(), subaccount: [] };
  const sent = await ledgerOf(agent).icrc1_transfer({
    from_subaccount: [],
    to: me,
    amount: 10_000_000_000_000n,
    fee: [],
    memo: [],
    created_at_time: [],
  });
  if (!('Ok' in sent)) throw new Error(`icrc1_transfer: ${JSON.stringify(sent)}`);
  const [subnet] = await Actor.createActor(cmc, {
    agent: own,
    canisterId: Principal.fromText('rkp4c-7iaaa-aaaaa-aaaca-cai'),
  }).get_default_subnets();
  const ledger = ledgerOf(own);
  const created = await ledger.create_canister({
    from_subaccount: [],
    created_at_time: [],
    amount: 2_000_000_000_000n,
    creation_args: [
      {
        settings: [{ controllers: [[Principal.anonymous()]] }],
        subnet_selection: [{ Subnet: { subnet } }],
      },
    ],
  });
  if (!('Ok' in created)) throw new Error(`create_canister: ${JSON.stringify(created)}`);
  canister_id = created.Ok.canister_id;
  // Queries read the newest certified state, which may trail the call by a height.
  for (let i = 0; i < 50; i++) {
    paid = 10_000_000_000_000n - (await ledger.icrc1_balance_of(me));
    if (paid !== 0n) break;
    await new Promise((r) => setTimeout(r, 200));
  }
} else {
  ({ canister_id } = await mgmt(
    Principal.fromText('i3flu-baaaa-aaaai-aaaaa-cai'),
  ).provisional_create_canister_with_cycles({ amount: [], settings: [], specified_id: [] }));
}
await mgmt(canister_id).install_code({
  mode: { install: null },
  canister_id,
  wasm_module: new Uint8Array(readFileSync(wasmPath)),
  arg: new Uint8Array(IDL.encode([], [])),
});
const actor = Actor.createActor(counter, { agent, canisterId: canister_id });
const first = await actor.inc();
const second = await actor.inc();
const greeting = await actor.greet('js');
// Queries read the newest certified state, which may trail the last call by a height.
let got;
for (let i = 0; i < 50; i++) {
  got = await actor.get();
  if (got === 2n) break;
  await new Promise((r) => setTimeout(r, 200));
}
const status = await mgmt(canister_id).canister_status({ canister_id });
const wasm = readFileSync(wasmPath);
// The log is read from the newest certified state too. @dfinity/agent 3 checks a management
// query's node signatures against the ranges of `aaaaa-aa` rather than of the effective
// canister, which no subnet holds (on the IC as here): only the current SDK reads logs.
let log = null;
if (core) {
  log = [];
  for (let i = 0; i < 50 && log.length < 2; i++) {
    const { canister_log_records } = await mgmt(canister_id).fetch_canister_logs({ canister_id });
    log = canister_log_records.map((r) => new TextDecoder().decode(r.content));
    if (log.length < 2) await new Promise((r) => setTimeout(r, 200));
  }
}
const summary = {
  agent: core ? '@icp-sdk/core' : '@dfinity/agent',
  canister: canister_id.toText(),
  inc: [first.toString(), second.toString()],
  get: got.toString(),
  greeting,
  status: Object.keys(status.status)[0],
  wasm_binary_size: status.memory_metrics.wasm_binary_size.toString(),
  log,
  paid: paid === null ? null : paid.toString(),
};
console.log(JSON.stringify(summary));
if (
  first !== 1n ||
  second !== 2n ||
  got !== 2n ||
  greeting !== 'Hello, js!' ||
  summary.status !== 'running' ||
  summary.wasm_binary_size !== String(wasm.length) ||
  (core && (log[0] !== 'count is 1' || log[1] !== 'count is 2')) ||
  (core && paid !== 2_000_100_000_000n)
) {
  process.exit(1);
}

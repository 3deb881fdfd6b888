// Drives a Thicket subnet with an unmodified JavaScript IC agent, with its default checks
// (certificates against the fetched root key, query signatures against the certified node
// keys): creates a canister, installs WASM, calls and queries it, reads its status and its log
// (the management canister's fetch_canister_logs query). The agent is @dfinity/agent, or with
// --core @icp-sdk/core (the current JavaScript SDK).
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

const { canister_id } = await mgmt(
  Principal.fromText('i3flu-baaaa-aaaai-aaaaa-cai'),
).provisional_create_canister_with_cycles({ amount: [], settings: [], specified_id: [] });
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
};
console.log(JSON.stringify(summary));
if (
  first !== 1n ||
  second !== 2n ||
  got !== 2n ||
  greeting !== 'Hello, js!' ||
  summary.status !== 'running' ||
  summary.wasm_binary_size !== String(wasm.length) ||
  (core && (log[0] !== 'count is 1' || log[1] !== 'count is 2'))
) {
  process.exit(1);
}

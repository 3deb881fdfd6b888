// Drives a Thicket subnet with the unmodified JavaScript IC agent (@dfinity/agent, with its
// default checks: certificates against the fetched root key, query signatures against the
// certified node keys): creates a canister, installs WASM, calls and queries it.
//   node agent-js.mjs URL WASM
// Prints a JSON summary; exits non-zero if anything is not as expected.
import { readFileSync } from 'node:fs';
import { Actor, HttpAgent } from '@dfinity/agent';
import { IDL } from '@dfinity/candid';
import { Principal } from '@dfinity/principal';

const [url, wasmPath] = process.argv.slice(2);
if (!url || !wasmPath) {
  console.error('usage: node agent-js.mjs URL WASM');
  process.exit(2);
}

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
const summary = {
  canister: canister_id.toText(),
  inc: [first.toString(), second.toString()],
  get: got.toString(),
  greeting,
};
console.log(JSON.stringify(summary));
if (first !== 1n || second !== 2n || got !== 2n || greeting !== 'Hello, js!') {
  process.exit(1);
}

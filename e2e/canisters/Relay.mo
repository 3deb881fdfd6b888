// A test canister that calls another: the Counter (e2e/canisters/Counter.mo), given by its
// canister id. It awaits the counter's replies and rejects, attaches cycles to a call, and
// traps after a call returns (which keeps what ran before the call, and runs the cleanup).
import Prim "mo:⛔";

persistent actor Relay {
  type Counter = actor {
    inc : () -> async Nat;
    inc_then_trap : () -> async Nat;
    take : () -> async Nat;
  };

  var calls : Nat = 0;

  // The counter's new count, times 100.
  public func inc_via(target : Text) : async Nat {
    let counter : Counter = actor (target);
    calls += 1;
    let n = await counter.inc();
    n * 100
  };

  // The counter traps; its reject comes back as an error to catch.
  public func trap_via(target : Text) : async Text {
    let counter : Counter = actor (target);
    try {
      ignore await counter.inc_then_trap();
      "no error"
    } catch (e) {
      "caught: " # Prim.errorMessage(e)
    }
  };

  // Traps after the call returns: the count before the call stays, the rest is rolled back.
  public func inc_then_fail(target : Text) : async Nat {
    let counter : Counter = actor (target);
    calls += 1;
    let n = await counter.inc();
    calls += 1000;
    Prim.trap("failing after the call returned " # debug_show n);
  };

  // Sends `amount` cycles with a call; returns what the counter kept and what came back.
  public func give(target : Text, amount : Nat) : async (Nat, Nat) {
    let counter : Counter = actor (target);
    let kept = await (with cycles = amount) counter.take();
    (kept, Prim.cyclesRefunded())
  };

  public query func calls_made() : async Nat { calls };

  public query func balance() : async Nat { Prim.cyclesBalance() };
};

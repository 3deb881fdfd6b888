// A test canister: a counter that survives between messages, a greeting with a Candid
// argument, a trap after a state change (which must be rolled back) and an endless loop
// (which must be cut by the instruction limit), and a method that accepts attached cycles.
import Prim "mo:⛔";

persistent actor Counter {
  var count : Nat = 0;

  public func inc() : async Nat {
    count += 1;
    Prim.debugPrint("count is " # debug_show count);
    count
  };

  public query func get() : async Nat { count };

  // Who called: the sender's principal, however the request was signed.
  public shared (msg) func whoami() : async Principal { msg.caller };

  public func greet(name : Text) : async Text { "Hello, " # name # "!" };

  public func inc_then_trap() : async Nat {
    count += 1000;
    Prim.trap("refusing on purpose");
  };

  // Keeps at most a million of the cycles attached to the call; returns how many it kept.
  public func take() : async Nat {
    let available = Prim.cyclesAvailable();
    Prim.cyclesAccept<system>(if (available > 1_000_000) 1_000_000 else available)
  };

  public query func balance() : async Nat { Prim.cyclesBalance() };

  public func spin() : async () {
    var i = 0;
    loop { i += 1 };
  };
};

// The fault harness's canister (e2e/faults): an append-only log of tokens. Each `put` appends
// its token and answers its position, so every answered call names the one place in every
// replica's state where its token must be; `range` reads the log back, replica by replica.
import List "mo:core/List";
import Nat "mo:core/Nat";

persistent actor Log {
  let entries = List.empty<Nat64>();

  // Appends `token` and returns its index (0-based).
  public func put(token : Nat64) : async Nat {
    List.add(entries, token);
    List.size(entries) - 1
  };

  public query func size() : async Nat { List.size(entries) };

  // Entries [from, from + count), cut at the end of the log.
  public query func range(from : Nat, count : Nat) : async [Nat64] {
    let size = List.size(entries);
    let start = Nat.min(from, size);
    let stop = Nat.min(start + count, size);
    List.sliceToArray(entries, start, stop)
  };
};

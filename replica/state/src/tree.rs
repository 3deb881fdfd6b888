//! The certified state tree and its witnesses, as the IC interface specification defines them.
//!
//! A [`LabeledTree`] is what the state exposes (`/time`, `/request_status/…`, `/canister/…`,
//! `/subnet/…`); [`HashedTree`] is the same with every node's digest computed once, from which
//! [`HashedTree::witness`] cuts the hash tree a certificate carries for a set of paths: the
//! requested subtrees in full, the labels around a requested label that does not exist (so the
//! client gets a proof of absence), and everything else pruned to its digest. The digests are
//! those of the specification's hash trees (`ic-certification`'s hash functions), with the
//! children of a node arranged as a balanced tree of forks in label order.

use std::collections::BTreeMap;

use ic_certification::hash_tree::{
    Hash, HashTree, HashTreeNode, empty, fork, fork_hash, label, labeled_hash, leaf, leaf_hash,
    pruned,
};

/// A tree of labeled subtrees with blob leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabeledTree {
    Leaf(Vec<u8>),
    SubTree(BTreeMap<Vec<u8>, LabeledTree>),
}

impl LabeledTree {
    pub fn subtree() -> Self {
        LabeledTree::SubTree(BTreeMap::new())
    }

    /// Inserts `value` at `path`, creating subtrees on the way (a leaf on the way is replaced).
    pub fn insert(&mut self, path: &[&[u8]], value: Vec<u8>) {
        let Some((first, rest)) = path.split_first() else {
            *self = LabeledTree::Leaf(value);
            return;
        };
        if !matches!(self, LabeledTree::SubTree(_)) {
            *self = LabeledTree::subtree();
        }
        if let LabeledTree::SubTree(children) = self {
            children
                .entry(first.to_vec())
                .or_insert_with(LabeledTree::subtree)
                .insert(rest, value);
        }
    }

    pub fn hashed(self) -> HashedTree {
        match self {
            LabeledTree::Leaf(v) => HashedTree {
                digest: leaf_hash(&v),
                node: Node::Leaf(v),
            },
            LabeledTree::SubTree(children) => {
                let children: Vec<(Vec<u8>, HashedTree)> =
                    children.into_iter().map(|(l, t)| (l, t.hashed())).collect();
                HashedTree {
                    digest: forks_digest(&children),
                    node: Node::SubTree(children),
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedTree {
    digest: Hash,
    node: Node,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Leaf(Vec<u8>),
    /// Children in increasing label order.
    SubTree(Vec<(Vec<u8>, HashedTree)>),
}

/// The digest of the empty tree.
fn empty_digest() -> Hash {
    HashTreeNode::<Vec<u8>>::Empty().digest()
}

/// Where a run of children splits into its left and right forks.
fn split(len: usize) -> usize {
    len / 2
}

fn forks_digest(children: &[(Vec<u8>, HashedTree)]) -> Hash {
    match children {
        [] => empty_digest(),
        [(l, t)] => labeled_hash(l, &t.digest),
        _ => {
            let (a, b) = children.split_at(split(children.len()));
            fork_hash(&forks_digest(a), &forks_digest(b))
        }
    }
}

/// What a witness shows of one child.
#[derive(Clone)]
enum Show<'p> {
    /// Its label, with the subtree pruned (a neighbour proving another label absent).
    Label,
    /// Its label and the part of the subtree these paths reach.
    Paths(Vec<&'p [Vec<u8>]>),
}

impl HashedTree {
    pub fn digest(&self) -> Hash {
        self.digest
    }

    /// The leaf at `path`, if there is one.
    pub fn lookup(&self, path: &[&[u8]]) -> Option<&[u8]> {
        let Some((first, rest)) = path.split_first() else {
            return match &self.node {
                Node::Leaf(v) => Some(v.as_slice()),
                Node::SubTree(_) => None,
            };
        };
        match &self.node {
            Node::Leaf(_) => None,
            Node::SubTree(children) => children
                .binary_search_by(|(l, _)| l.as_slice().cmp(first))
                .ok()
                .and_then(|i| children[i].1.lookup(rest)),
        }
    }

    /// Whether a node exists at `path`.
    pub fn contains(&self, path: &[&[u8]]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return true;
        };
        match &self.node {
            Node::Leaf(_) => false,
            Node::SubTree(children) => children
                .binary_search_by(|(l, _)| l.as_slice().cmp(first))
                .is_ok_and(|i| children[i].1.contains(rest)),
        }
    }

    /// The whole tree as a hash tree (nothing pruned).
    pub fn full(&self) -> HashTree<Vec<u8>> {
        match &self.node {
            Node::Leaf(v) => leaf(v.clone()),
            Node::SubTree(children) => {
                let shown: Vec<Option<Show<'_>>> = children
                    .iter()
                    .map(|_| Some(Show::Paths(vec![&[][..]])))
                    .collect();
                forks_witness(children, &shown)
            }
        }
    }

    /// The hash tree revealing `paths` (each a sequence of labels) and pruning the rest; its
    /// digest is this tree's.
    pub fn witness(&self, paths: &[Vec<Vec<u8>>]) -> HashTree<Vec<u8>> {
        let refs: Vec<&[Vec<u8>]> = paths.iter().map(Vec::as_slice).collect();
        self.witness_refs(&refs)
    }

    fn witness_refs(&self, paths: &[&[Vec<u8>]]) -> HashTree<Vec<u8>> {
        if paths.is_empty() {
            return pruned(self.digest);
        }
        let children = match &self.node {
            // A path reaching or going through a leaf shows the leaf.
            Node::Leaf(_) => return self.full(),
            Node::SubTree(c) => c,
        };
        if paths.iter().any(|p| p.is_empty()) {
            return self.full();
        }
        let mut shown: Vec<Option<Show<'_>>> = vec![None; children.len()];
        for p in paths {
            let (first, rest) = (&p[0], &p[1..]);
            match children.binary_search_by(|(l, _)| l.as_slice().cmp(first.as_slice())) {
                Ok(i) => match &mut shown[i] {
                    Some(Show::Paths(v)) => v.push(rest),
                    slot => *slot = Some(Show::Paths(vec![rest])),
                },
                Err(i) => {
                    // Absent: show the labels on either side.
                    for j in [i.checked_sub(1), (i < children.len()).then_some(i)]
                        .into_iter()
                        .flatten()
                    {
                        if shown[j].is_none() {
                            shown[j] = Some(Show::Label);
                        }
                    }
                }
            }
        }
        forks_witness(children, &shown)
    }
}

fn forks_witness(
    children: &[(Vec<u8>, HashedTree)],
    shown: &[Option<Show<'_>>],
) -> HashTree<Vec<u8>> {
    if children.is_empty() {
        return empty();
    }
    if shown.iter().all(Option::is_none) {
        return pruned(forks_digest(children));
    }
    if let ([(l, t)], [Some(show)]) = (children, shown) {
        let sub = match show {
            Show::Label => pruned(t.digest),
            Show::Paths(paths) => t.witness_refs(paths),
        };
        return label(l.clone(), sub);
    }
    let mid = split(children.len());
    fork(
        forks_witness(&children[..mid], &shown[..mid]),
        forks_witness(&children[mid..], &shown[mid..]),
    )
}

/// The IC's encoding of a natural number in the state tree: unsigned LEB128.
pub use thicket_types::ingress::leb128;

#[cfg(test)]
mod tests {
    use super::*;
    use ic_certification::LookupResult;

    fn sample() -> LabeledTree {
        let mut t = LabeledTree::subtree();
        t.insert(&[b"time"], leb128(1_700_000_000));
        for id in [b"aa", b"bb", b"dd"] {
            t.insert(&[b"request_status", id, b"status"], b"replied".to_vec());
            t.insert(&[b"request_status", id, b"reply"], id.to_vec());
        }
        t.insert(&[b"canister", b"c1", b"certified_data"], vec![1, 2]);
        t
    }

    fn path(p: &[&[u8]]) -> Vec<Vec<u8>> {
        p.iter().map(|l| l.to_vec()).collect()
    }

    #[test]
    fn witnesses_have_the_tree_digest_and_reveal_what_was_asked() {
        let h = sample().hashed();
        assert_eq!(h.full().digest(), h.digest());
        let w = h.witness(&[path(&[b"time"]), path(&[b"request_status", b"bb"])]);
        assert_eq!(w.digest(), h.digest());
        assert_eq!(
            w.lookup_path([b"request_status".as_slice(), b"bb", b"reply"]),
            LookupResult::Found(b"bb")
        );
        assert_eq!(
            w.lookup_path([b"time".as_slice()]),
            LookupResult::Found(&leb128(1_700_000_000)[..])
        );
        // Not asked for: pruned.
        assert_eq!(
            w.lookup_path([b"request_status".as_slice(), b"aa", b"reply"]),
            LookupResult::Unknown
        );
        assert!(matches!(
            w.lookup_path([b"canister".as_slice(), b"c1", b"certified_data"]),
            LookupResult::Unknown
        ));
    }

    #[test]
    fn absent_labels_are_proven_absent() {
        let h = sample().hashed();
        for missing in [&b"a0"[..], b"cc", b"zz", b"0"] {
            let w = h.witness(&[path(&[b"request_status", missing, b"status"])]);
            assert_eq!(w.digest(), h.digest());
            assert_eq!(
                w.lookup_path([b"request_status".as_slice(), missing, b"status"]),
                LookupResult::Absent,
                "{missing:?}"
            );
        }
        let w = h.witness(&[path(&[b"nothing_here"])]);
        assert_eq!(
            w.lookup_path([b"nothing_here".as_slice()]),
            LookupResult::Absent
        );
        let empty = LabeledTree::subtree().hashed();
        let w = empty.witness(&[path(&[b"x"])]);
        assert_eq!(w.digest(), empty.digest());
        assert_eq!(w.lookup_path([b"x".as_slice()]), LookupResult::Absent);
    }
}

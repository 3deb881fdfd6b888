//! The certified state tree and its witnesses, as the IC interface specification defines them.
//!
//! A [`LabeledTree`] is what the state exposes (`/time`, `/request_status/…`, `/canister/…`,
//! `/subnet/…`), built in one go; [`HashedTree`] is the same with every node's digest stored,
//! persistent (a change copies only the path to it, older versions stay as they were) and
//! changed in place by [`HashedTree::insert`], [`HashedTree::remove`] and [`HashedTree::set`]
//! in O(log n) digests per change. [`HashedTree::witness`] cuts the hash tree a certificate
//! carries for a set of paths: the requested subtrees in full, the labels around a requested
//! label that does not exist (so the client gets a proof of absence), and everything else
//! pruned to its digest, in O(log n) nodes per path.
//!
//! The children of a node are arranged as a treap: a binary search tree by label in which
//! each label's priority is a hash of it, so its shape depends only on the set of labels and
//! never on the order of changes (every replica computes the same root whether it built the
//! tree at once or changed it height by height). A treap node with label `l` shows as
//! `fork(left, fork(label(l, ·), right))`, a missing side dropped; the leaves of the forks are
//! in label order, as lookups of the specification's hash trees require. Digests are those of
//! `ic-certification`'s hash functions.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use ic_certification::hash_tree::{
    Hash, HashTree, HashTreeNode, empty, fork, fork_hash, label, labeled_hash, leaf, leaf_hash,
    pruned,
};
use sha2::{Digest, Sha256};

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
            LabeledTree::Leaf(v) => HashedTree::leaf(v),
            LabeledTree::SubTree(children) => {
                let mut items: Vec<(Vec<u8>, u64, HashedTree)> = children
                    .into_iter()
                    .map(|(l, t)| {
                        let p = priority(&l);
                        (l, p, t.hashed())
                    })
                    .collect();
                HashedTree::subtree(build(&mut items))
            }
        }
    }
}

/// A labeled tree with every node's digest stored. Cloning is cheap (nodes are shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedTree {
    digest: Hash,
    node: Node,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Leaf(Arc<[u8]>),
    /// Children as a treap by label.
    SubTree(Link),
}

type Link = Option<Arc<TreapNode>>;

#[derive(Debug, PartialEq, Eq)]
struct TreapNode {
    /// Shared by every version of the node.
    label: Arc<[u8]>,
    priority: u64,
    child: HashedTree,
    left: Link,
    right: Link,
    /// The digest of its label and child alone (kept when only the sides change).
    me: Hash,
    /// The digest of this node's forks: its label, its child and both sides.
    digest: Hash,
}

impl TreapNode {
    /// This node with other sides.
    fn with_sides(&self, left: Link, right: Link) -> Link {
        linked(
            self.label.clone(),
            self.priority,
            (self.child.clone(), self.me),
            left,
            right,
        )
    }

    /// This node with another child and sides (its digest computed again only if the child's
    /// changed).
    fn with(&self, child: HashedTree, left: Link, right: Link) -> Link {
        if child.digest == self.child.digest {
            return linked(
                self.label.clone(),
                self.priority,
                (child, self.me),
                left,
                right,
            );
        }
        node(self.label.clone(), self.priority, child, left, right)
    }
}

/// A label's place in the treap's heap order: a hash of it, so that the shape is determined
/// by the labels alone.
fn priority(label: &[u8]) -> u64 {
    let h = Sha256::digest(label);
    u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8]))
}

/// Whether a node with (`p`, `l`) sits above one with (`q`, `m`): higher priority, ties broken
/// by label.
fn above(p: u64, l: &[u8], q: u64, m: &[u8]) -> bool {
    (p, l) > (q, m)
}

fn link_digest(link: &Link) -> Option<Hash> {
    link.as_ref().map(|n| n.digest)
}

fn node(label: Arc<[u8]>, priority: u64, child: HashedTree, left: Link, right: Link) -> Link {
    let me = labeled_hash(&label, &child.digest);
    linked(label, priority, (child, me), left, right)
}

/// A node whose child's labeled digest `me` is known.
fn linked(
    label: Arc<[u8]>,
    priority: u64,
    (child, me): (HashedTree, Hash),
    left: Link,
    right: Link,
) -> Link {
    let digest = match (link_digest(&left), link_digest(&right)) {
        (None, None) => me,
        (Some(l), None) => fork_hash(&l, &me),
        (None, Some(r)) => fork_hash(&me, &r),
        (Some(l), Some(r)) => fork_hash(&l, &fork_hash(&me, &r)),
    };
    Some(Arc::new(TreapNode {
        label,
        priority,
        child,
        left,
        right,
        me,
        digest,
    }))
}

/// The treap of children sorted by label: the highest priority at the root.
fn build(items: &mut [(Vec<u8>, u64, HashedTree)]) -> Link {
    let top = items
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| (a.1, &a.0).cmp(&(b.1, &b.0)))
        .map(|(i, _)| i)?;
    let (left, rest) = items.split_at_mut(top);
    let (me, right) = rest.split_first_mut()?;
    let (l, r) = (build(left), build(right));
    let child = std::mem::replace(&mut me.2, HashedTree::leaf(Vec::new()));
    node(Arc::from(std::mem::take(&mut me.0)), me.1, child, l, r)
}

fn get<'a>(mut link: &'a Link, label: &[u8]) -> Option<&'a HashedTree> {
    while let Some(n) = link {
        match label.cmp(&n.label) {
            std::cmp::Ordering::Less => link = &n.left,
            std::cmp::Ordering::Greater => link = &n.right,
            std::cmp::Ordering::Equal => return Some(&n.child),
        }
    }
    None
}

/// The labels of `link` below `label`, and above it (`label` itself must not be in it).
fn split(link: &Link, label: &[u8]) -> (Link, Link) {
    let Some(n) = link else {
        return (None, None);
    };
    if label < &*n.label {
        let (l, r) = split(&n.left, label);
        (l, n.with_sides(r, n.right.clone()))
    } else {
        let (l, r) = split(&n.right, label);
        (n.with_sides(n.left.clone(), l), r)
    }
}

/// Joins two treaps, every label of `a` below every label of `b`.
fn join(a: &Link, b: &Link) -> Link {
    match (a, b) {
        (None, _) => b.clone(),
        (_, None) => a.clone(),
        (Some(x), Some(y)) => {
            if above(x.priority, &x.label, y.priority, &y.label) {
                let right = join(&x.right, b);
                x.with_sides(x.left.clone(), right)
            } else {
                let left = join(a, &y.left);
                y.with_sides(left, y.right.clone())
            }
        }
    }
}

/// `link`'s labels below `label`, its child under `label` (if any), and its labels above.
fn split_at(link: &Link, label: &[u8]) -> (Link, Option<HashedTree>, Link) {
    let Some(n) = link else {
        return (None, None, None);
    };
    match label.cmp(&n.label) {
        std::cmp::Ordering::Equal => (n.left.clone(), Some(n.child.clone()), n.right.clone()),
        std::cmp::Ordering::Less => {
            let (l, same, r) = split_at(&n.left, label);
            let right = n.with_sides(r, n.right.clone());
            (l, same, right)
        }
        std::cmp::Ordering::Greater => {
            let (l, same, r) = split_at(&n.right, label);
            let left = n.with_sides(n.left.clone(), l);
            (left, same, r)
        }
    }
}

/// The labels of both treaps, with `b`'s children where both have a label: each node of the
/// result is built once, so `m` changes cost O(m·log(n/m)) digests rather than O(m·log n).
fn union(a: &Link, b: &Link) -> Link {
    match (a, b) {
        (None, _) => b.clone(),
        (_, None) => a.clone(),
        (Some(x), Some(y)) => {
            if above(x.priority, &x.label, y.priority, &y.label) {
                let (bl, same, br) = split_at(b, &x.label);
                let child = same.unwrap_or_else(|| x.child.clone());
                let (l, r) = (union(&x.left, &bl), union(&x.right, &br));
                x.with(child, l, r)
            } else {
                let (al, _, ar) = split_at(a, &y.label);
                let (l, r) = (union(&al, &y.left), union(&ar, &y.right));
                y.with_sides(l, r)
            }
        }
    }
}

/// `link` with `label`'s child replaced by `child` (inserted if absent).
fn put(link: &Link, label: &[u8], priority: u64, child: HashedTree) -> Link {
    let Some(n) = link else {
        return node(Arc::from(label), priority, child, None, None);
    };
    match label.cmp(&n.label) {
        std::cmp::Ordering::Equal => n.with(child, n.left.clone(), n.right.clone()),
        _ if above(priority, label, n.priority, &n.label) => {
            let (l, r) = split(link, label);
            node(Arc::from(label), priority, child, l, r)
        }
        std::cmp::Ordering::Less => {
            let left = put(&n.left, label, priority, child);
            n.with_sides(left, n.right.clone())
        }
        std::cmp::Ordering::Greater => {
            let right = put(&n.right, label, priority, child);
            n.with_sides(n.left.clone(), right)
        }
    }
}

/// `link` without `label` (unchanged, shared, if it has none).
fn delete(link: &Link, label: &[u8]) -> Link {
    if get(link, label).is_none() {
        return link.clone();
    }
    delete_present(link, label)
}

/// `link` without `label`, which it holds.
fn delete_present(link: &Link, label: &[u8]) -> Link {
    let n = link.as_ref()?;
    match label.cmp(&n.label) {
        std::cmp::Ordering::Equal => join(&n.left, &n.right),
        std::cmp::Ordering::Less => {
            let left = delete_present(&n.left, label);
            n.with_sides(left, n.right.clone())
        }
        std::cmp::Ordering::Greater => {
            let right = delete_present(&n.right, label);
            n.with_sides(n.left.clone(), right)
        }
    }
}

/// The labels of `link` just below and just above `label` (which it does not hold).
fn neighbours<'a>(link: &'a Link, label: &[u8]) -> [Option<&'a [u8]>; 2] {
    let (mut below, mut above) = (None, None);
    let mut at = link;
    while let Some(n) = at {
        if label < &*n.label {
            above = Some(&*n.label);
            at = &n.left;
        } else {
            below = Some(&*n.label);
            at = &n.right;
        }
    }
    [below, above]
}

/// The digest of the empty tree.
fn empty_digest() -> Hash {
    HashTreeNode::<Vec<u8>>::Empty().digest()
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
    pub fn leaf(value: Vec<u8>) -> Self {
        HashedTree {
            digest: leaf_hash(&value),
            node: Node::Leaf(value.into()),
        }
    }

    /// A subtree with no children.
    pub fn empty() -> Self {
        HashedTree::subtree(None)
    }

    fn subtree(link: Link) -> Self {
        HashedTree {
            digest: link_digest(&link).unwrap_or_else(empty_digest),
            node: Node::SubTree(link),
        }
    }

    pub fn digest(&self) -> Hash {
        self.digest
    }

    /// The child under `label`, if this is a subtree that has one.
    pub fn child(&self, label: &[u8]) -> Option<&HashedTree> {
        match &self.node {
            Node::SubTree(link) => get(link, label),
            Node::Leaf(_) => None,
        }
    }

    /// The tree at `path`, if there is one.
    fn at(&self, path: &[&[u8]]) -> Option<&HashedTree> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self.child(first)?.at(rest),
        }
    }

    /// The leaf at `path`, if there is one.
    pub fn lookup(&self, path: &[&[u8]]) -> Option<&[u8]> {
        match &self.at(path)?.node {
            Node::Leaf(v) => Some(v),
            Node::SubTree(_) => None,
        }
    }

    /// Whether a node exists at `path`.
    pub fn contains(&self, path: &[&[u8]]) -> bool {
        self.at(path).is_some()
    }

    /// Puts `tree` at `path`, creating subtrees on the way (a leaf on the way is replaced).
    pub fn set(&mut self, path: &[&[u8]], tree: HashedTree) {
        let Some((first, rest)) = path.split_first() else {
            *self = tree;
            return;
        };
        let link = match &self.node {
            Node::SubTree(link) => link.clone(),
            Node::Leaf(_) => None,
        };
        let mut child = get(&link, first).cloned().unwrap_or_else(HashedTree::empty);
        child.set(rest, tree);
        *self = HashedTree::subtree(put(&link, first, priority(first), child));
    }

    /// Puts each of `children` (label, tree) under the subtree at `path` (created if need
    /// be), all at once: the same tree as putting them one by one with [`HashedTree::set`],
    /// with each node on the way built once.
    pub fn set_children(&mut self, path: &[&[u8]], children: Vec<(Vec<u8>, HashedTree)>) {
        if children.is_empty() {
            return;
        }
        let link = match self.at(path).map(|t| &t.node) {
            Some(Node::SubTree(link)) => link.clone(),
            _ => None,
        };
        let mut items: Vec<(Vec<u8>, u64, HashedTree)> = children
            .into_iter()
            .map(|(l, t)| {
                let p = priority(&l);
                (l, p, t)
            })
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        // The last of equal labels wins, as with one `set` after another.
        items.reverse();
        items.dedup_by(|later, earlier| later.0 == earlier.0);
        items.reverse();
        let batch = build(&mut items);
        self.set(path, HashedTree::subtree(union(&link, &batch)));
    }

    /// Inserts `value` at `path` (as [`LabeledTree::insert`]).
    pub fn insert(&mut self, path: &[&[u8]], value: Vec<u8>) {
        self.set(path, HashedTree::leaf(value));
    }

    /// Removes what is at `path`, and every subtree left empty on the way (a tree built by
    /// [`LabeledTree::hashed`] has no empty subtrees).
    pub fn remove(&mut self, path: &[&[u8]]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let Node::SubTree(link) = &self.node else {
            return;
        };
        let Some(child) = get(link, first) else {
            return;
        };
        let link = if rest.is_empty() {
            delete(link, first)
        } else {
            let mut child = child.clone();
            child.remove(rest);
            if matches!(child.node, Node::SubTree(None)) {
                delete(link, first)
            } else {
                put(link, first, priority(first), child)
            }
        };
        *self = HashedTree::subtree(link);
    }

    /// The whole tree as a hash tree (nothing pruned).
    pub fn full(&self) -> HashTree<Vec<u8>> {
        self.witness_refs(&[&[]])
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
        let link = match &self.node {
            // A path reaching or going through a leaf shows the leaf.
            Node::Leaf(v) => return leaf(v.to_vec()),
            Node::SubTree(link) => link,
        };
        let Some(root) = link else {
            return empty();
        };
        let everything = paths.iter().any(|p| p.is_empty());
        let mut shown: BTreeMap<&[u8], Show<'_>> = BTreeMap::new();
        if !everything {
            for p in paths {
                let (first, rest) = (p[0].as_slice(), &p[1..]);
                if get(link, first).is_some() {
                    match shown.entry(first) {
                        std::collections::btree_map::Entry::Occupied(mut e) => match e.get_mut() {
                            Show::Paths(v) => v.push(rest),
                            s => *s = Show::Paths(vec![rest]),
                        },
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(Show::Paths(vec![rest]));
                        }
                    }
                } else {
                    // Absent: show the labels on either side.
                    for n in neighbours(link, first).into_iter().flatten() {
                        shown.entry(n).or_insert(Show::Label);
                    }
                }
            }
        }
        treap_witness(root, &shown, everything, Bound::Unbounded, Bound::Unbounded)
    }
}

/// The forks of a treap node, showing the labels in `shown` (all of them if `everything`);
/// `lo` and `hi` bound the labels under it.
fn treap_witness(
    n: &TreapNode,
    shown: &BTreeMap<&[u8], Show<'_>>,
    everything: bool,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
) -> HashTree<Vec<u8>> {
    if !everything && shown.range::<[u8], _>((lo, hi)).next().is_none() {
        return pruned(n.digest);
    }
    let me = if everything {
        label(n.label.to_vec(), n.child.full())
    } else {
        match shown.get(&*n.label) {
            Some(Show::Paths(paths)) => label(n.label.to_vec(), n.child.witness_refs(paths)),
            Some(Show::Label) => label(n.label.to_vec(), pruned(n.child.digest)),
            None => pruned(n.me),
        }
    };
    let mid = &*n.label;
    let left = n
        .left
        .as_ref()
        .map(|l| treap_witness(l, shown, everything, lo, Bound::Excluded(mid)));
    let right = n
        .right
        .as_ref()
        .map(|r| treap_witness(r, shown, everything, Bound::Excluded(mid), hi));
    match (left, right) {
        (None, None) => me,
        (Some(l), None) => fork(l, me),
        (None, Some(r)) => fork(me, r),
        (Some(l), Some(r)) => fork(l, fork(me, r)),
    }
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

    /// A deterministic sequence of small numbers.
    fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |below| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        }
    }

    fn build(model: &BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>>) -> HashedTree {
        let mut t = LabeledTree::subtree();
        for ((a, b), v) in model {
            t.insert(&[a.as_slice(), b.as_slice()], v.clone());
        }
        t.hashed()
    }

    #[test]
    fn changes_in_place_give_the_tree_built_at_once() {
        let mut next = numbers(0x5eed);
        let mut model = BTreeMap::new();
        let mut t = build(&model);
        let mut versions = Vec::new();
        for step in 0..600 {
            let a = vec![b'a' + next(4) as u8];
            let b = next(40).to_be_bytes()[6..].to_vec();
            if next(5) == 0 {
                // A batch under one subtree, with a label given twice (the last one wins).
                let mut batch = Vec::new();
                for _ in 0..next(12) {
                    let b = next(40).to_be_bytes()[6..].to_vec();
                    let v = vec![next(256) as u8];
                    model.insert((a.clone(), b.clone()), v.clone());
                    batch.push((b, HashedTree::leaf(v)));
                }
                if let Some((b, _)) = batch.first().cloned() {
                    let v = vec![7, 7];
                    model.insert((a.clone(), b.clone()), v.clone());
                    batch.push((b, HashedTree::leaf(v)));
                }
                t.set_children(&[a.as_slice()], batch);
            } else if next(3) == 0 {
                model.remove(&(a.clone(), b.clone()));
                t.remove(&[a.as_slice(), b.as_slice()]);
            } else {
                let v = vec![next(256) as u8; next(3) as usize];
                model.insert((a.clone(), b.clone()), v.clone());
                t.insert(&[a.as_slice(), b.as_slice()], v);
            }
            let built = build(&model);
            assert_eq!(t, built, "step {step}");
            if step % 50 == 0 {
                versions.push((t.clone(), model.clone()));
            }
            // Witnesses: a present leaf, an absent one, a whole subtree.
            let paths = [
                path(&[a.as_slice(), b.as_slice()]),
                path(&[a.as_slice(), b"zz"]),
                path(&[b"b"]),
            ];
            let w = t.witness(&paths);
            assert_eq!(w.digest(), t.digest());
            let found = w.lookup_path([a.as_slice(), b.as_slice()]);
            match model.get(&(a.clone(), b.clone())) {
                Some(v) => assert_eq!(found, LookupResult::Found(v.as_slice())),
                None => assert_eq!(found, LookupResult::Absent),
            }
            assert_eq!(w.lookup_path([a.as_slice(), b"zz"]), LookupResult::Absent);
        }
        // Older versions are as they were.
        for (t, model) in versions {
            assert_eq!(t, build(&model));
        }
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

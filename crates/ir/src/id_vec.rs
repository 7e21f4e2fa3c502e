//! Storage with one slot per value or per node of a graph, indexed by the typed id, so a
//! `NodeId` cannot index per-value data by mistake and callers need no `id.0 as usize`.

use crate::{Graph, NodeId, ValueId};
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

/// A graph id that numbers slots from 0: `ValueId` or `NodeId`.
pub trait Id: Copy {
    fn index(self) -> usize;
}

impl Id for ValueId {
    fn index(self) -> usize {
        self.0 as usize
    }
}

impl Id for NodeId {
    fn index(self) -> usize {
        self.0 as usize
    }
}

/// One `T` per id, indexed by the id.
#[derive(Debug, Clone, PartialEq)]
pub struct IdVec<I, T> {
    items: Vec<T>,
    id: PhantomData<fn(I)>,
}

/// One `T` per value of a graph, indexed by `ValueId`.
pub type PerValue<T> = IdVec<ValueId, T>;

/// One `T` per node of a graph, indexed by `NodeId`.
pub type PerNode<T> = IdVec<NodeId, T>;

impl<T: Clone> PerValue<T> {
    /// `item` for every value of `graph`.
    pub fn for_values(graph: &Graph, item: T) -> Self {
        vec![item; graph.values.len()].into()
    }
}

impl<T: Clone> PerNode<T> {
    /// `item` for every node of `graph`.
    pub fn for_nodes(graph: &Graph, item: T) -> Self {
        vec![item; graph.nodes.len()].into()
    }
}

/// Slot `i` belongs to the id numbered `i`.
impl<I, T> From<Vec<T>> for IdVec<I, T> {
    fn from(items: Vec<T>) -> Self {
        IdVec {
            items,
            id: PhantomData,
        }
    }
}

impl<I, T> From<IdVec<I, T>> for Vec<T> {
    fn from(v: IdVec<I, T>) -> Self {
        v.items
    }
}

/// The n-th item belongs to the id numbered n.
impl<I, T> FromIterator<T> for IdVec<I, T> {
    fn from_iter<It: IntoIterator<Item = T>>(iter: It) -> Self {
        iter.into_iter().collect::<Vec<T>>().into()
    }
}

impl<I: Id, T> Index<I> for IdVec<I, T> {
    type Output = T;
    fn index(&self, id: I) -> &T {
        &self.items[id.index()]
    }
}

impl<I: Id, T> IndexMut<I> for IdVec<I, T> {
    fn index_mut(&mut self, id: I) -> &mut T {
        &mut self.items[id.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_by_id() {
        let mut per_node: PerNode<u8> = vec![0; 3].into();
        per_node[NodeId(2)] = 7;
        assert_eq!(per_node[NodeId(2)], 7);
        assert_eq!(Vec::from(per_node), vec![0, 0, 7]);
    }
}

//! Channel spaces and groups.
//!
//! A channel space is the channel axis (axis 1) of an activation. Conv/Gemm/MatMul outputs open
//! new spaces; per-channel ops pass a space through; element-wise ops over two activations unite
//! spaces; Concat lays spaces side by side; Flatten (or a flattening Reshape) turns each channel
//! into a block of features. Every weight, bias or per-channel constant that reads or writes a
//! channel is recorded as a `Slice`: a tensor, an axis, and the channel layout along that axis.

use pare_ir::{Graph, NodeId, Tensor, ValueId, ValueSource};
use std::collections::{BTreeMap, HashMap};

mod rules;

/// Index of a group in `ChannelGroups::groups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct GroupId(pub u32);

/// A run of `len` channels of one space along an axis, each channel `block` consecutive indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub space: usize,
    pub len: usize,
    pub block: usize,
}

/// What a sliced tensor does with the channels along its axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SliceKind {
    /// Writes them: a Conv/Gemm/MatMul weight's output axis, its bias.
    Producer,
    /// Reads them: a Conv/Gemm/MatMul weight's input axis.
    Consumer,
    /// Acts on each one: BatchNorm vectors, per-channel constants, depthwise weights.
    PerChannel,
}

/// A constant tensor whose `axis` is laid out as `segments`: slicing it removes channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub tensor: ValueId,
    pub axis: usize,
    pub segments: Vec<Segment>,
    pub kind: SliceKind,
    /// The node that reads the tensor, and as which of its inputs.
    pub node: NodeId,
    pub input: usize,
    /// Why the slice exists, for reports: "Conv /conv1/Conv output", …
    pub role: String,
}

/// One united channel space with everything that must change when its channels are dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: GroupId,
    pub channels: usize,
    /// The activations (channel axis 1) that carry this group's channels.
    pub values: Vec<ValueId>,
    /// Why the group cannot be pruned; empty if it can.
    pub frozen: Vec<String>,
    /// The Slices that touch this group (a Slice over a Concat touches several groups).
    pub slices: Vec<usize>,
}

impl Group {
    pub fn prunable(&self) -> bool {
        self.frozen.is_empty() && self.channels > 1
    }
}

/// The result of the analysis.
#[derive(Debug, Clone)]
pub struct ChannelGroups {
    pub groups: Vec<Group>,
    pub slices: Vec<Slice>,
    /// Depthwise Convs whose `group` attribute equals a group's channel count.
    pub depthwise: Vec<(NodeId, GroupId)>,
    /// Reshapes whose constant target holds a feature count that follows groups.
    pub reshapes: Vec<(NodeId, Vec<Segment>)>,
    /// Space → group.
    space_group: Vec<GroupId>,
}

impl ChannelGroups {
    pub fn group_of_space(&self, space: usize) -> GroupId {
        self.space_group[space]
    }

    pub fn group(&self, id: GroupId) -> &Group {
        &self.groups[id.0 as usize]
    }

    /// What identifies a group from one analysis to the next: its first activation, or the first
    /// tensor it slices. Group ids are not stable: a depthwise group cut to one channel stops
    /// being depthwise, and the groups after it are numbered anew.
    pub fn key(&self, id: GroupId) -> Option<ValueId> {
        let g = self.group(id);
        g.values
            .first()
            .copied()
            .or_else(|| g.slices.first().map(|&i| self.slices[i].tensor))
    }
}

/// One analysis in progress: a union-find over channel spaces (`parent`, `len`, with why each is
/// frozen), the layout of every activation seen, and the slices recorded so far.
struct Analysis<'g> {
    graph: &'g Graph,
    parent: Vec<usize>,
    len: Vec<usize>,
    frozen: Vec<Vec<String>>,
    maps: HashMap<ValueId, Vec<Segment>>,
    slices: Vec<Slice>,
    depthwise: Vec<(NodeId, usize)>,
    reshapes: Vec<(NodeId, Vec<Segment>)>,
    /// The node being analysed: the one its slices belong to.
    current: NodeId,
}

impl<'g> Analysis<'g> {
    fn space(&mut self, len: usize) -> usize {
        self.parent.push(self.parent.len());
        self.len.push(len);
        self.frozen.push(Vec::new());
        self.parent.len() - 1
    }

    fn find(&mut self, s: usize) -> usize {
        let mut r = s;
        while self.parent[r] != r {
            r = self.parent[r];
        }
        self.parent[s] = r;
        r
    }

    fn unite(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[rb] = ra;
            let moved = std::mem::take(&mut self.frozen[rb]);
            self.frozen[ra].extend(moved);
        }
    }

    fn freeze(&mut self, segments: &[Segment], why: String) {
        for s in segments {
            let r = self.find(s.space);
            if !self.frozen[r].contains(&why) {
                self.frozen[r].push(why.clone());
            }
        }
    }

    fn freeze_value(&mut self, v: ValueId, why: String) {
        if let Some(map) = self.maps.get(&v).cloned() {
            self.freeze(&map, why);
        }
    }

    fn channels(&self, v: ValueId) -> Option<usize> {
        let shape = self.graph.value(v).shape.as_ref()?;
        (shape.rank() >= 2).then(|| shape.0[1].known()).flatten()
    }

    /// A fresh space for node output `v` (frozen when `why` is given).
    fn open(&mut self, v: ValueId, why: Option<String>) -> Option<Vec<Segment>> {
        let c = self.channels(v)?;
        let s = self.space(c);
        let map = vec![Segment {
            space: s,
            len: c,
            block: 1,
        }];
        if let Some(why) = why {
            self.freeze(&map, why);
        }
        self.maps.insert(v, map.clone());
        Some(map)
    }

    fn f32_shape(&self, v: Option<ValueId>) -> Option<Vec<usize>> {
        match &self.graph.value(v?).source {
            ValueSource::Initializer(Tensor::F32(a)) => Some(a.shape().to_vec()),
            _ => None,
        }
    }

    fn slice(
        &mut self,
        kind: SliceKind,
        tensor: ValueId,
        axis: usize,
        segments: Vec<Segment>,
        role: String,
    ) {
        let node = self.current;
        let input = self
            .graph
            .node(node)
            .inputs
            .iter()
            .position(|&i| i == Some(tensor))
            .expect("a slice is one of its node's inputs");
        self.slices.push(Slice {
            tensor,
            axis,
            segments,
            kind,
            node,
            input,
            role,
        });
    }
}

/// Finds the channel groups of a graph.
pub fn analyze(graph: &Graph) -> ChannelGroups {
    let mut a = Analysis {
        graph,
        parent: Vec::new(),
        len: Vec::new(),
        frozen: Vec::new(),
        maps: HashMap::new(),
        slices: Vec::new(),
        depthwise: Vec::new(),
        reshapes: Vec::new(),
        current: NodeId(0),
    };
    for &v in &graph.inputs {
        if let Some(c) = a.channels(v) {
            let s = a.space(c);
            a.maps.insert(
                v,
                vec![Segment {
                    space: s,
                    len: c,
                    block: 1,
                }],
            );
            a.frozen[s].push(format!("graph input '{}'", graph.value(v).name));
        }
    }
    for id in graph.node_ids() {
        a.node(id);
    }
    for &v in &graph.outputs {
        a.freeze_value(v, format!("reaches graph output '{}'", graph.value(v).name));
    }
    // A tensor sliced twice along one axis is shared by two layers: slicing it for one would
    // break the other, so their groups are frozen.
    let mut seen: HashMap<(ValueId, usize), usize> = HashMap::new();
    for i in 0..a.slices.len() {
        let key = (a.slices[i].tensor, a.slices[i].axis);
        if let Some(&j) = seen.get(&key) {
            let why = format!("tensor '{}' is shared", graph.value(key.0).name);
            for k in [i, j] {
                let segs = a.slices[k].segments.clone();
                a.freeze(&segs, why.clone());
            }
        }
        seen.insert(key, i);
    }

    // Number the roots in order of first appearance.
    let mut ids: BTreeMap<usize, GroupId> = BTreeMap::new();
    let mut space_group = Vec::with_capacity(a.parent.len());
    let mut groups: Vec<Group> = Vec::new();
    for s in 0..a.parent.len() {
        let r = a.find(s);
        let next = GroupId(ids.len() as u32);
        let id = *ids.entry(r).or_insert(next);
        if id == next {
            groups.push(Group {
                id,
                channels: a.len[r],
                values: Vec::new(),
                frozen: a.frozen[r].clone(),
                slices: Vec::new(),
            });
        }
        space_group.push(id);
    }
    let mut values: Vec<(&ValueId, &Vec<Segment>)> = a.maps.iter().collect();
    values.sort_by_key(|(v, _)| **v);
    for (v, map) in values {
        if let [seg] = map.as_slice() {
            let g = &mut groups[space_group[seg.space].0 as usize];
            if seg.block == 1 {
                g.values.push(*v);
            }
        }
    }
    for (i, slice) in a.slices.iter().enumerate() {
        for seg in &slice.segments {
            let g = &mut groups[space_group[seg.space].0 as usize];
            if !g.slices.contains(&i) {
                g.slices.push(i);
            }
        }
    }
    let depthwise = a
        .depthwise
        .iter()
        .map(|&(n, s)| (n, space_group[s]))
        .collect();
    ChannelGroups {
        groups,
        slices: a.slices,
        depthwise,
        reshapes: a.reshapes,
        space_group,
    }
}

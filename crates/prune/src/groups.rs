//! Channel spaces and groups.
//!
//! A channel space is the channel axis (axis 1) of an activation. Conv/Gemm/MatMul outputs open
//! new spaces; per-channel ops pass a space through; element-wise ops over two activations unite
//! spaces; Concat lays spaces side by side; Flatten (or a flattening Reshape) turns each channel
//! into a block of features. Every weight, bias or per-channel constant that reads or writes a
//! channel is recorded as a `Slice`: a tensor, an axis, and the channel layout along that axis.

use pare_ir::{Graph, NodeId, Op, Tensor, ValueId, ValueSource};
use std::collections::{BTreeMap, HashMap};

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
}

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

    fn node(&mut self, id: NodeId) {
        self.current = id;
        let graph = self.graph;
        let node = graph.node(id);
        let label = format!("{} '{}'", node.op.op_type(), node.name);
        let x = node.inputs.first().copied().flatten();
        let xmap = x.and_then(|v| self.maps.get(&v).cloned());
        let out = node.outputs[0];
        let pass = |a: &mut Self, map: Option<Vec<Segment>>| {
            if let Some(map) = map {
                a.maps.insert(out, map);
            }
        };
        match &node.op {
            Op::Conv(c) => {
                let w = node.inputs.get(1).copied().flatten();
                let Some(wshape) = self.f32_shape(w) else {
                    if let Some(m) = &xmap {
                        self.freeze(m, format!("{label} has a computed weight"));
                    }
                    self.open(out, Some(format!("{label} has a computed weight")));
                    return;
                };
                let w = w.expect("checked");
                let bias = node.inputs.get(2).copied().flatten();
                let c_in = xmap
                    .as_ref()
                    .map(|m| m.iter().map(|s| s.len).sum::<usize>());
                let depthwise =
                    c.group > 1 && wshape[1] == 1 && Some(c.group) == c_in && wshape[0] == c.group;
                if depthwise {
                    let map = xmap.clone().expect("depthwise input has channels");
                    if map.len() != 1 {
                        self.freeze(&map, format!("{label} is depthwise over a concatenation"));
                    }
                    self.slice(
                        SliceKind::PerChannel,
                        w,
                        0,
                        map.clone(),
                        format!("{label} depthwise weight"),
                    );
                    if let Some(b) = bias.filter(|&b| self.f32_shape(Some(b)).is_some()) {
                        self.slice(
                            SliceKind::PerChannel,
                            b,
                            0,
                            map.clone(),
                            format!("{label} bias"),
                        );
                    }
                    self.depthwise.push((id, map[0].space));
                    pass(self, Some(map));
                    return;
                }
                if c.group != 1 {
                    if let Some(m) = &xmap {
                        self.freeze(m, format!("{label} is a grouped convolution"));
                    }
                    self.open(out, Some(format!("{label} is a grouped convolution")));
                    return;
                }
                if let Some(m) = xmap {
                    self.slice(SliceKind::Consumer, w, 1, m, format!("{label} input"));
                }
                if let Some(map) = self.open(out, None) {
                    self.slice(
                        SliceKind::Producer,
                        w,
                        0,
                        map.clone(),
                        format!("{label} output"),
                    );
                    if let Some(b) = bias.filter(|&b| self.f32_shape(Some(b)).is_some()) {
                        self.slice(SliceKind::Producer, b, 0, map, format!("{label} bias"));
                    }
                }
            }
            Op::Gemm(g) => {
                let b = node.inputs.get(1).copied().flatten();
                let c = node.inputs.get(2).copied().flatten();
                match (self.f32_shape(b), g.trans_a) {
                    (Some(_), false) => {
                        let b = b.expect("checked");
                        if let Some(m) = xmap {
                            self.slice(
                                SliceKind::Consumer,
                                b,
                                if g.trans_b { 1 } else { 0 },
                                m,
                                format!("{label} input"),
                            );
                        }
                        let Some(map) = self.open(out, None) else {
                            return;
                        };
                        self.slice(
                            SliceKind::Producer,
                            b,
                            if g.trans_b { 0 } else { 1 },
                            map.clone(),
                            format!("{label} output"),
                        );
                        match self.f32_shape(c) {
                            Some(s)
                                if s.last() == Some(&map[0].len)
                                    && s.iter().rev().skip(1).all(|&d| d == 1) =>
                            {
                                self.slice(
                                    SliceKind::Producer,
                                    c.expect("checked"),
                                    s.len() - 1,
                                    map,
                                    format!("{label} bias"),
                                );
                            }
                            Some(s) if s.iter().all(|&d| d == 1) => {}
                            None if c.is_none() => {}
                            _ => self.freeze(
                                &map,
                                format!("{label} adds a C that is not a per-output bias"),
                            ),
                        }
                    }
                    _ => {
                        if let Some(m) = &xmap {
                            self.freeze(m, format!("{label} has a computed or transposed operand"));
                        }
                        self.open(
                            out,
                            Some(format!("{label} has a computed or transposed operand")),
                        );
                    }
                }
            }
            Op::MatMul => {
                let b = node.inputs.get(1).copied().flatten();
                let rank2 = x
                    .and_then(|v| graph.value(v).shape.as_ref())
                    .is_some_and(|s| s.rank() == 2);
                match self.f32_shape(b) {
                    Some(s) if s.len() == 2 && rank2 => {
                        let b = b.expect("checked");
                        if let Some(m) = xmap {
                            self.slice(SliceKind::Consumer, b, 0, m, format!("{label} input"));
                        }
                        if let Some(map) = self.open(out, None) {
                            self.slice(SliceKind::Producer, b, 1, map, format!("{label} output"));
                        }
                    }
                    _ => {
                        if let Some(m) = &xmap {
                            self.freeze(
                                m,
                                format!("{label} is not a 2-d product with a constant matrix"),
                            );
                        }
                        self.open(
                            out,
                            Some(format!(
                                "{label} is not a 2-d product with a constant matrix"
                            )),
                        );
                    }
                }
            }
            Op::BatchNorm { .. } => {
                if let Some(m) = &xmap {
                    for (i, role) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
                        match node
                            .inputs
                            .get(i)
                            .copied()
                            .flatten()
                            .filter(|&v| self.f32_shape(Some(v)).is_some())
                        {
                            Some(v) => self.slice(
                                SliceKind::PerChannel,
                                v,
                                0,
                                m.clone(),
                                format!("{label} {role}"),
                            ),
                            None => self.freeze(m, format!("{label} has a computed {role}")),
                        }
                    }
                }
                pass(self, xmap);
            }
            Op::Relu
            | Op::Clip
            | Op::LeakyRelu { .. }
            | Op::Sigmoid
            | Op::HardSigmoid { .. }
            | Op::HardSwish
            | Op::Dropout { .. }
            | Op::Identity
            | Op::MaxPool(_)
            | Op::AveragePool { .. }
            | Op::GlobalAveragePool => pass(self, xmap),
            Op::Softmax { axis } => {
                let rank = x
                    .and_then(|v| graph.value(v).shape.as_ref())
                    .map_or(0, |s| s.rank()) as i64;
                if (*axis + rank) % rank.max(1) == 1 {
                    if let Some(m) = &xmap {
                        self.freeze(m, format!("{label} normalises over channels"));
                    }
                    self.open(out, Some(format!("{label} normalises over channels")));
                } else {
                    pass(self, xmap);
                }
            }
            Op::Add | Op::Sub | Op::Mul | Op::Div => self.elementwise(id, &label),
            Op::Flatten { axis } => {
                let shape = x.and_then(|v| graph.value(v).shape.clone());
                let rank = shape.as_ref().map_or(0, |s| s.rank()) as i64;
                let inner = shape
                    .as_ref()
                    .and_then(|s| {
                        s.0.get(2..)
                            .map(|d| d.iter().map(|d| d.known()).product::<Option<usize>>())
                    })
                    .flatten();
                match (xmap, (*axis + rank) % rank.max(1) == 1 || *axis == 1, inner) {
                    (Some(m), true, Some(inner)) => {
                        let map = m
                            .iter()
                            .map(|s| Segment {
                                block: s.block * inner,
                                ..*s
                            })
                            .collect();
                        pass(self, Some(map));
                    }
                    (m, _, _) => {
                        if let Some(m) = m {
                            self.freeze(
                                &m,
                                format!("{label} does not flatten from the channel axis"),
                            );
                        }
                        self.open(
                            out,
                            Some(format!("{label} does not flatten from the channel axis")),
                        );
                    }
                }
            }
            Op::Reshape { .. } => self.reshape(id, &label, xmap),
            Op::Concat { axis } => {
                let rank = graph.value(out).shape.as_ref().map_or(0, |s| s.rank()) as i64;
                let maps: Option<Vec<Vec<Segment>>> = node
                    .inputs
                    .iter()
                    .map(|v| v.and_then(|v| self.maps.get(&v).cloned()))
                    .collect();
                match maps {
                    Some(maps) if rank >= 2 && (*axis + rank) % rank == 1 => {
                        pass(self, Some(maps.concat()))
                    }
                    maps => {
                        for m in maps.into_iter().flatten() {
                            self.freeze(&m, format!("{label} joins along another axis"));
                        }
                        self.open(out, Some(format!("{label} joins along another axis")));
                    }
                }
            }
            Op::Opaque(_) => {
                for v in node.inputs.iter().flatten() {
                    self.freeze_value(*v, format!("{label} is not modelled by pare"));
                }
                for &o in &node.outputs {
                    self.open(o, Some(format!("{label} is not modelled by pare")));
                }
            }
        }
    }

    fn elementwise(&mut self, id: NodeId, label: &str) {
        let graph = self.graph;
        let node = graph.node(id);
        let out = node.outputs[0];
        let out_rank = graph.value(out).shape.as_ref().map_or(0, |s| s.rank());
        let operands: Vec<Option<ValueId>> = node.inputs.iter().take(2).copied().collect();
        let maps: Vec<Option<Vec<Segment>>> = operands
            .iter()
            .map(|v| v.and_then(|v| self.maps.get(&v).cloned()))
            .collect();
        // Activation operands must have the output's rank to carry channels on axis 1.
        let activation = |a: &Self, v: Option<ValueId>| {
            v.and_then(|v| a.graph.value(v).shape.as_ref())
                .is_some_and(|s| s.rank() == out_rank)
        };
        match (&maps[0], &maps[1]) {
            (Some(a), Some(b))
                if activation(self, operands[0]) && activation(self, operands[1]) =>
            {
                let same = a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| x.len == y.len && x.block == y.block);
                if same {
                    for (x, y) in a.clone().iter().zip(b) {
                        self.unite(x.space, y.space);
                    }
                    self.maps.insert(out, a.clone());
                } else {
                    let why = format!("{label} combines differently laid out channels");
                    self.freeze(a, why.clone());
                    self.freeze(b, why.clone());
                    self.open(out, Some(why));
                }
            }
            (Some(m), _) | (_, Some(m)) => {
                let m = m.clone();
                let other = if maps[0].is_some() {
                    operands[1]
                } else {
                    operands[0]
                };
                let other_is_map_less_activation = other
                    .is_some_and(|v| !matches!(graph.value(v).source, ValueSource::Initializer(_)));
                if !activation(
                    self,
                    if maps[0].is_some() {
                        operands[0]
                    } else {
                        operands[1]
                    },
                ) || other_is_map_less_activation
                {
                    let why = format!("{label} broadcasts channels against a computed value");
                    self.freeze(&m, why.clone());
                    self.open(out, Some(why));
                    return;
                }
                // A constant operand: per-channel constants are sliced, scalars left alone.
                if let Some(c) = other {
                    let shape = self.f32_shape(Some(c));
                    match shape {
                        Some(s) if s.iter().product::<usize>() <= 1 => {}
                        Some(s)
                            if out_rank >= 2
                                && s.len() + 1 >= out_rank
                                && m.len() == 1
                                && m[0].block == 1 =>
                        {
                            let axis = s.len() + 1 - out_rank;
                            if s[axis] == m[0].len {
                                self.slice(
                                    SliceKind::PerChannel,
                                    c,
                                    axis,
                                    m.clone(),
                                    format!("{label} per-channel constant"),
                                );
                            } else if s[axis] != 1 {
                                self.freeze(&m, format!("{label} has a constant of shape {s:?}"));
                            }
                        }
                        _ => self.freeze(&m, format!("{label} has a constant that spans channels")),
                    }
                }
                self.maps.insert(out, m);
            }
            (None, None) => {}
        }
    }

    fn reshape(&mut self, id: NodeId, label: &str, xmap: Option<Vec<Segment>>) {
        let graph = self.graph;
        let node = graph.node(id);
        let out = node.outputs[0];
        let Some(m) = xmap else { return };
        let (xs, ys) = (
            node.inputs[0].and_then(|v| graph.value(v).shape.clone()),
            graph.value(out).shape.clone(),
        );
        let flattens = match (&xs, &ys) {
            (Some(xs), Some(ys)) => {
                xs.rank() >= 2
                    && ys.rank() == 2
                    && xs.0[0] == ys.0[0]
                    && xs.0[1..]
                        .iter()
                        .map(|d| d.known())
                        .product::<Option<usize>>()
                        == ys.0[1].known()
            }
            _ => false,
        };
        if flattens {
            let inner: usize = xs.expect("checked").0[2..]
                .iter()
                .filter_map(|d| d.known())
                .product();
            let map: Vec<Segment> = m
                .iter()
                .map(|s| Segment {
                    block: s.block * inner,
                    ..*s
                })
                .collect();
            self.reshapes.push((id, map.clone()));
            self.maps.insert(out, map);
        } else if xs.is_some() && xs == ys {
            self.maps.insert(out, m);
        } else {
            let why = format!("{label} hard-codes the channel count");
            self.freeze(&m, why.clone());
            self.open(out, Some(why));
        }
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

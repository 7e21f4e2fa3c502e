//! What each op does to channel spaces: the rules `analyze` applies node by node (which spaces an
//! op opens, passes through, unites or lays side by side, and which tensors it slices).

use super::{Analysis, Segment, SliceKind};
use pare_ir::{NodeId, Op, ValueId, ValueSource};

impl Analysis<'_> {
    pub(super) fn node(&mut self, id: NodeId) {
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
                if *axis == 1 || *axis == 1 - rank {
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
                match (xmap, *axis == 1 || *axis == 1 - rank, inner) {
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
            Op::Reshape { allowzero } => self.reshape(id, &label, *allowzero, xmap),
            Op::Concat { axis } => {
                let rank = graph.value(out).shape.as_ref().map_or(0, |s| s.rank()) as i64;
                let maps: Option<Vec<Vec<Segment>>> = node
                    .inputs
                    .iter()
                    .map(|v| v.and_then(|v| self.maps.get(&v).cloned()))
                    .collect();
                match maps {
                    Some(maps) if rank >= 2 && (*axis == 1 || *axis == 1 - rank) => {
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

    fn reshape(&mut self, id: NodeId, label: &str, allowzero: bool, xmap: Option<Vec<Segment>>) {
        let graph = self.graph;
        let node = graph.node(id);
        let out = node.outputs[0];
        let Some(m) = xmap else { return };
        let (xs, ys) = (
            node.inputs[0].and_then(|v| graph.value(v).shape.clone()),
            graph.value(out).shape.clone(),
        );
        // Surgery can follow the channels only through a target it can read and rewrite: a
        // constant int64 vector (a shape computed at run time, or of another type, stays fixed).
        let target = graph
            .const_input(id, 1)
            .and_then(|t| t.as_i64())
            .filter(|t| t.ndim() == 1);
        let flattens = match (&xs, &ys, target) {
            (Some(xs), Some(ys), Some(target)) => {
                target.len() == 2
                    && xs.rank() >= 2
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
        // A reshape that keeps the shape passes the channels through only if its target does
        // not spell out their count: 0 copies it (unless allowzero), -1 infers it.
        let keeps_channels =
            target.is_some_and(|t| t.len() >= 2 && (t[[1]] == -1 || (t[[1]] == 0 && !allowzero)));
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
        } else if keeps_channels && xs.is_some() && xs == ys {
            self.maps.insert(out, m);
        } else {
            let why = match target {
                Some(_) => format!("{label} hard-codes the channel count"),
                None => format!("{label} has a target shape that is not a constant int64 vector"),
            };
            self.freeze(&m, why.clone());
            self.open(out, Some(why));
        }
    }
}

//! Real sizes: MobileNetV2, ResNet-18 and ResNet-50 layer for layer as torchvision defines them
//! (Conv without bias → BatchNorm → ReLU/ReLU6, inverted residuals with depthwise convolutions,
//! basic and bottleneck blocks with 1×1 projections, global pooling, Flatten, Linear to 1000
//! classes), built with the
//! project's model builder and seeded random weights (He initialisation) at a 32×32 input so the
//! tests stay fast. Each is imported, grouped, pruned at random with the surgery property checked
//! in tract, compared with tract's forward pass, and trained for one step.

mod properties;

use pare_kernels::rng::SplitMix64;
use pare_onnx::attr::{self, tensor_f32};
use pare_onnx::proto::ModelProto;
use pare_onnx::{DimSpec, GraphBuilder};
use pare_prune::analyze;
use properties::{assert_forward_matches_tract, assert_one_training_step, check_surgery, image};

/// A model under construction: the builder, the weight generator and a counter for names.
struct Net {
    b: GraphBuilder,
    rng: SplitMix64,
    count: usize,
}

/// What follows a convolution and its BatchNorm.
#[derive(Clone, Copy, PartialEq)]
enum Act {
    None,
    Relu,
    Relu6,
}

impl Net {
    fn new(name: &str, seed: u64) -> Net {
        let mut b = GraphBuilder::new(name, 17);
        b.input(
            "input",
            [DimSpec::from("batch"), 3.into(), 32.into(), 32.into()],
        );
        b.initializer(tensor_f32("zero", &[], vec![0.0]));
        b.initializer(tensor_f32("six", &[], vec![6.0]));
        Net {
            b,
            rng: SplitMix64::new(seed),
            count: 0,
        }
    }

    fn name(&mut self, what: &str) -> String {
        self.count += 1;
        format!("{what}{}", self.count)
    }

    /// Values uniform in [-scale, scale].
    fn uniform(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.rng.unit_f64() * 2.0 - 1.0) as f32) * scale)
            .collect()
    }

    fn tensor(&mut self, name: &str, dims: &[i64], values: Vec<f32>) {
        self.b.initializer(tensor_f32(name, dims, values));
    }

    /// Conv (no bias) → BatchNorm → activation, as torchvision's `Conv2dNormActivation`.
    #[allow(clippy::too_many_arguments)] // reads like the layer it adds, as torchvision's does
    fn conv_bn(
        &mut self,
        x: &str,
        c_in: i64,
        c_out: i64,
        k: i64,
        stride: i64,
        group: i64,
        act: Act,
    ) -> String {
        let conv = self.name("conv");
        let fan_in = (c_in / group * k * k) as f32;
        let w = self.uniform(
            (c_out * c_in / group * k * k) as usize,
            (6.0 / fan_in).sqrt(),
        );
        self.tensor(&format!("{conv}.weight"), &[c_out, c_in / group, k, k], w);
        self.b.node(
            "Conv",
            &[x, &format!("{conv}.weight")],
            &[&conv],
            vec![
                attr::ints("kernel_shape", &[k, k]),
                attr::ints("strides", &[stride, stride]),
                attr::ints("pads", &[(k - 1) / 2; 4]),
                attr::int("group", group),
            ],
        );
        let bn = self.name("bn");
        let c = c_out as usize;
        let scale = self.uniform(c, 0.2).iter().map(|v| 1.0 + v).collect();
        let bias = self.uniform(c, 0.1);
        let mean = self.uniform(c, 0.1);
        let var = self.uniform(c, 0.2).iter().map(|v| 1.0 + v).collect();
        for (part, values) in [
            ("scale", scale),
            ("bias", bias),
            ("mean", mean),
            ("var", var),
        ] {
            self.tensor(&format!("{bn}.{part}"), &[c_out], values);
        }
        let parts: Vec<String> = ["scale", "bias", "mean", "var"]
            .iter()
            .map(|p| format!("{bn}.{p}"))
            .collect();
        self.b.node(
            "BatchNormalization",
            &[&conv, &parts[0], &parts[1], &parts[2], &parts[3]],
            &[&bn],
            vec![],
        );
        let out = self.name("act");
        match act {
            Act::None => return bn,
            Act::Relu => self.b.node("Relu", &[&bn], &[&out], vec![]),
            Act::Relu6 => self.b.node("Clip", &[&bn, "zero", "six"], &[&out], vec![]),
        };
        out
    }

    fn add(&mut self, a: &str, b: &str) -> String {
        let out = self.name("add");
        self.b.node("Add", &[a, b], &[&out], vec![]);
        out
    }

    /// Global average pooling, Flatten and Linear to `classes`, the graph's output.
    fn classifier(mut self, x: &str, features: i64, classes: i64) -> ModelProto {
        self.b.node("GlobalAveragePool", &[x], &["pool"], vec![]);
        self.b
            .node("Flatten", &["pool"], &["flat"], vec![attr::int("axis", 1)]);
        let bound = 1.0 / (features as f32).sqrt();
        let w = self.uniform((classes * features) as usize, bound);
        self.tensor("fc.weight", &[classes, features], w);
        let bias = self.uniform(classes as usize, bound);
        self.tensor("fc.bias", &[classes], bias);
        self.b.node(
            "Gemm",
            &["flat", "fc.weight", "fc.bias"],
            &["logits"],
            vec![attr::int("transB", 1)],
        );
        self.b
            .output("logits", [DimSpec::from("batch"), classes.into()]);
        self.b.build()
    }
}

/// torchvision's MobileNetV2 (width 1.0): (expansion, channels, blocks, first stride) per stage.
const MOBILENET_V2: [(i64, i64, usize, i64); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

fn mobilenet_v2() -> ModelProto {
    let mut net = Net::new("mobilenet_v2", 2);
    let mut x = net.conv_bn("input", 3, 32, 3, 2, 1, Act::Relu6);
    let mut c_in = 32;
    for (t, c, n, s) in MOBILENET_V2 {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = c_in * t;
            let mut h = x.clone();
            if t != 1 {
                h = net.conv_bn(&h, c_in, hidden, 1, 1, 1, Act::Relu6);
            }
            h = net.conv_bn(&h, hidden, hidden, 3, stride, hidden, Act::Relu6);
            h = net.conv_bn(&h, hidden, c, 1, 1, 1, Act::None);
            x = if stride == 1 && c_in == c {
                net.add(&x, &h)
            } else {
                h
            };
            c_in = c;
        }
    }
    let x = net.conv_bn(&x, c_in, 1280, 1, 1, 1, Act::Relu6);
    net.classifier(&x, 1280, 1000)
}

/// torchvision's ResNet stem: a 7×7 stride-2 convolution and a 3×3 stride-2 max pool.
fn resnet_stem(net: &mut Net) -> String {
    let stem = net.conv_bn("input", 3, 64, 7, 2, 1, Act::Relu);
    net.b.node(
        "MaxPool",
        &[&stem],
        &["maxpool"],
        vec![
            attr::ints("kernel_shape", &[3, 3]),
            attr::ints("strides", &[2, 2]),
            attr::ints("pads", &[1, 1, 1, 1]),
        ],
    );
    "maxpool".to_string()
}

/// The end of a residual block: `h` plus the shortcut (a 1×1 projection when the shape changes),
/// then ReLU.
fn residual(net: &mut Net, x: &str, h: &str, c_in: i64, c_out: i64, stride: i64) -> String {
    let shortcut = if stride != 1 || c_in != c_out {
        net.conv_bn(x, c_in, c_out, 1, stride, 1, Act::None)
    } else {
        x.to_string()
    };
    let sum = net.add(h, &shortcut);
    let out = net.name("relu");
    net.b.node("Relu", &[&sum], &[&out], vec![]);
    out
}

/// Stage widths and first strides of torchvision's ResNets.
const RESNET_STAGES: [(i64, i64); 4] = [(64, 1), (128, 2), (256, 2), (512, 2)];

/// torchvision's ResNet-18: the stem, then four stages of two basic blocks.
fn resnet18() -> ModelProto {
    let mut net = Net::new("resnet18", 3);
    let mut x = resnet_stem(&mut net);
    let mut c_in = 64;
    for (c, first_stride) in RESNET_STAGES {
        for i in 0..2 {
            let stride = if i == 0 { first_stride } else { 1 };
            let h = net.conv_bn(&x, c_in, c, 3, stride, 1, Act::Relu);
            let h = net.conv_bn(&h, c, c, 3, 1, 1, Act::None);
            x = residual(&mut net, &x, &h, c_in, c, stride);
            c_in = c;
        }
    }
    net.classifier(&x, 512, 1000)
}

/// Bottleneck blocks per stage of torchvision's ResNet-50.
const RESNET50_BLOCKS: [usize; 4] = [3, 4, 6, 3];

/// torchvision's ResNet-50: the stem, then four stages of bottleneck blocks (1×1 down to the
/// stage width, 3×3 with the stride, as torchvision's v1.5 places it, 1×1 up to four times it).
fn resnet50() -> ModelProto {
    let mut net = Net::new("resnet50", 4);
    let mut x = resnet_stem(&mut net);
    let mut c_in = 64;
    for ((width, first_stride), blocks) in RESNET_STAGES.into_iter().zip(RESNET50_BLOCKS) {
        let c_out = width * 4;
        for i in 0..blocks {
            let stride = if i == 0 { first_stride } else { 1 };
            let h = net.conv_bn(&x, c_in, width, 1, 1, 1, Act::Relu);
            let h = net.conv_bn(&h, width, width, 3, stride, 1, Act::Relu);
            let h = net.conv_bn(&h, width, c_out, 1, 1, 1, Act::None);
            x = residual(&mut net, &x, &h, c_in, c_out, stride);
            c_in = c_out;
        }
    }
    net.classifier(&x, 2048, 1000)
}

fn prunable_widths(graph: &pare_ir::Graph) -> Vec<usize> {
    let mut widths: Vec<usize> = analyze(graph)
        .groups
        .iter()
        .filter(|g| g.prunable())
        .map(|g| g.channels)
        .collect();
    widths.sort_unstable();
    widths
}

fn check(name: &str, model: &ModelProto, mut expected: Vec<usize>) {
    let graph = pare_ir::import(model).unwrap();
    expected.sort_unstable();
    assert_eq!(prunable_widths(&graph), expected, "{name}");
    let x = image(2, 3, 32);
    assert_forward_matches_tract(name, &graph, &x);
    check_surgery(name, &graph, &x, 2, 1e-4);
    assert_one_training_step(name, &graph, &x, 1000);
}

#[test]
fn mobilenet_v2_groups_prunes_and_trains() {
    // The stem's 32 channels (through the first depthwise block), one expanded width per block
    // with an expansion (its depthwise conv included), one residual stream per stage, and the
    // last 1×1 conv's 1280 into the classifier.
    let mut expected = vec![32, 1280];
    let mut c_in = 32;
    for (t, c, n, _) in MOBILENET_V2 {
        for _ in 0..n {
            if t != 1 {
                expected.push((c_in * t) as usize);
            }
            c_in = c;
        }
        expected.push(c as usize);
    }
    check("mobilenet_v2", &mobilenet_v2(), expected);
}

#[test]
fn resnet18_groups_prunes_and_trains() {
    // One group inside each of the eight basic blocks and one residual stream per stage (the
    // stem's 64 channels join stage 1's).
    let expected = vec![64, 64, 128, 128, 256, 256, 512, 512, 64, 128, 256, 512];
    check("resnet18", &resnet18(), expected);
}

#[test]
fn resnet50_groups_prunes_and_trains() {
    // Two groups inside each of the sixteen bottleneck blocks (the 1×1 and the 3×3 outputs) and
    // one residual stream per stage at four times the stage width; the stem's 64 channels only
    // feed stage 1's first block and its projection, so they are a group of their own.
    let mut expected = vec![64];
    for ((width, _), blocks) in RESNET_STAGES.into_iter().zip(RESNET50_BLOCKS) {
        expected.extend(std::iter::repeat_n(width as usize, 2 * blocks));
        expected.push(4 * width as usize);
    }
    check("resnet50", &resnet50(), expected);
}

"""PyTorch's side of `cargo xtask bench train` (dev-only; no test needs it).

Builds each shipped model in PyTorch from its ONNX file (the networks are plain chains of Conv,
BatchNormalization, Relu, MaxPool, Flatten and Gemm, so each node maps to one torch module and its
initializers become the module's parameters), then times SGD training steps (lr 0.01, momentum
0.9, cross-entropy, training mode) on the MNIST subset with the same batch size, thread count,
warm-up and step count as pare's side. Prints one `RESULT <model file> <images/s>` line per model.

Needs torch, onnx and numpy: python3 scripts/bench_torch.py --models models
"""

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
import torch
from torch import nn

MODELS = ["lenet5_opset17.onnx", "vggbn_keepbn_opset17.onnx", "vggbn_opset17.onnx"]


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def torch_model(path):
    """An nn.Sequential equal to the ONNX chain at `path`, with its weights."""
    model = onnx.load(str(path))
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        a = attrs(node)
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            bias = len(node.input) > 2 and node.input[2] in inits
            pads = a.get("pads", [0, 0, 0, 0])
            assert pads[:2] == pads[2:], "symmetric padding only"
            conv = nn.Conv2d(w.shape[1] * a.get("group", 1), w.shape[0], tuple(w.shape[2:]),
                             stride=tuple(a.get("strides", [1, 1])), padding=tuple(pads[:2]),
                             dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1),
                             bias=bias)
            conv.weight.data.copy_(w)
            if bias:
                conv.bias.data.copy_(inits[node.input[2]])
            layers.append(conv)
        elif node.op_type == "BatchNormalization":
            scale, b, mean, var = (inits[n] for n in node.input[1:5])
            # ONNX's momentum weighs the running value; PyTorch's weighs the batch.
            bn = nn.BatchNorm2d(scale.shape[0], eps=a.get("epsilon", 1e-5),
                                momentum=1.0 - a.get("momentum", 0.9))
            bn.weight.data.copy_(scale)
            bn.bias.data.copy_(b)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            layers.append(bn)
        elif node.op_type == "Relu":
            layers.append(nn.ReLU())
        elif node.op_type == "MaxPool":
            assert a.get("pads", [0, 0, 0, 0]) == [0, 0, 0, 0]
            layers.append(nn.MaxPool2d(tuple(a["kernel_shape"]), stride=tuple(a.get("strides", [1, 1])),
                                       ceil_mode=bool(a.get("ceil_mode", 0))))
        elif node.op_type == "Flatten":
            layers.append(nn.Flatten(a.get("axis", 1)))
        elif node.op_type == "Gemm":
            assert a.get("transB", 0) == 1 and a.get("transA", 0) == 0
            w = inits[node.input[1]]
            fc = nn.Linear(w.shape[1], w.shape[0])
            fc.weight.data.copy_(w)
            fc.bias.data.copy_(inits[node.input[2]])
            layers.append(fc)
        else:
            raise SystemExit(f"{path}: {node.op_type} is not handled by this script")
    return nn.Sequential(*layers)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = read_idx(args.models / "mnist5k/train-images-idx3-ubyte.gz")
    labels = read_idx(args.models / "mnist5k/train-labels-idx1-ubyte.gz")
    order = np.random.default_rng(0).permutation(len(labels))
    x = torch.from_numpy(images[order].astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels[order].astype(np.int64))
    n = args.warmup + args.steps
    batches = [(x[i * args.batch:(i + 1) * args.batch].contiguous(),
                y[i * args.batch:(i + 1) * args.batch].contiguous()) for i in range(n)]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in MODELS:
        model = torch_model(args.models / name)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        times = []
        for i, (xb, yb) in enumerate(batches):
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
        # The median step, as pare's side reports: a step slowed by another process on the
        # machine moves it far less than it moves the mean.
        print(f"RESULT {name} {args.batch / float(np.median(times)):.1f}")


if __name__ == "__main__":
    main()

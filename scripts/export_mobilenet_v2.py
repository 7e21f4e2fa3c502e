"""Dev-only: writes torchvision's MobileNetV2 (seeded random weights, 224x224 input, batch 1
static) as ONNX, for measuring latency targets on a real-size depthwise network
(docs/BENCHMARKS.md, "bench latency-target"). Needs torch, torchvision and onnx.

    python3 scripts/export_mobilenet_v2.py OUT.onnx
"""

import sys

import torch
import torchvision


def main(out: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(model, x, out, opset_version=13, input_names=["input"],
                      output_names=["logits"], dynamo=False)


if __name__ == "__main__":
    main(sys.argv[1])

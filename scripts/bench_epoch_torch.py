"""PyTorch's side of `cargo xtask bench epoch` (dev-only; no test needs it).

Builds torchvision's MobileNetV2 (random weights, 1000 classes), writes it as ONNX with its
BatchNormalization nodes kept (so pare trains the same network PyTorch does), then times one
training epoch: SGD (lr 0.01, momentum 0.9), cross-entropy, training mode, on N random 224×224
images with random labels, at the given batch size and thread count. Prints
`RESULT <seconds>` for the epoch (after one untimed warm-up batch).

Needs torch, torchvision and onnx:
python3 scripts/bench_epoch_torch.py --onnx /tmp/mobilenet_v2.onnx --images 1000 --batch 32 --threads 2
"""

import argparse
import time

import torch
import torchvision


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--onnx", required=True)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=1000)
    model.eval()
    torch.onnx.export(
        model,
        torch.zeros(1, 3, 224, 224),
        args.onnx,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
        dynamo=False,
    )

    images = torch.rand(args.images, 3, 224, 224)
    labels = torch.randint(0, 1000, (args.images,))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    step(images[: args.batch], labels[: args.batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, args.images, args.batch):
        step(images[i : i + args.batch], labels[i : i + args.batch])
    print(f"RESULT {time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()

# Builds models/mobile/: a small MobileNet-style CNN (depthwise conv, squeeze-and-excitation,
# Hardswish, ReLU6, residual Add, Concat, LeakyReLU, AveragePool) trained by PyTorch on a synthetic
# 16x16 RGB task, exported with the TorchScript exporter at opset 13. Dev-only: needs torch.
# Run from the workspace root: python3 scripts/make_mobile_fixture.py
import torch, torch.nn as nn, numpy as np
torch.manual_seed(0)
rng = np.random.default_rng(0)
def make(n):
    x = rng.integers(0, 256, (n,3,16,16), dtype=np.uint8)
    # class from which quadrant/channel is brightest: learnable
    q = (x / 255.0).reshape(n,3,2,8,2,8).mean(axis=(3,5)).reshape(n,12)
    y = (q.argmax(1) % 4).astype(np.int64)
    return x, y
xtr, ytr = make(800); xte, yte = make(300)
np.savez_compressed('models/mobile/quadrants.npz', x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
class SE(nn.Module):
    def __init__(s, c):
        super().__init__(); s.f1 = nn.Conv2d(c, c//4, 1); s.f2 = nn.Conv2d(c//4, c, 1)
    def forward(s, x):
        g = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        return x * torch.nn.functional.hardsigmoid(s.f2(torch.relu(s.f1(g))))
class Block(nn.Module):
    def __init__(s, c, e):
        super().__init__()
        s.pw = nn.Sequential(nn.Conv2d(c, c*e, 1, bias=False), nn.BatchNorm2d(c*e), nn.ReLU6())
        s.dw = nn.Sequential(nn.Conv2d(c*e, c*e, 3, padding=1, groups=c*e, bias=False), nn.BatchNorm2d(c*e), nn.Hardswish())
        s.se = SE(c*e)
        s.pj = nn.Sequential(nn.Conv2d(c*e, c, 1, bias=False), nn.BatchNorm2d(c))
    def forward(s, x): return x + s.pj(s.se(s.dw(s.pw(x))))
class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        s.b1 = Block(16, 4)
        s.a = nn.Conv2d(16, 12, 3, padding=1); s.b = nn.Conv2d(16, 12, 1)
        s.b2 = nn.Sequential(nn.BatchNorm2d(24), nn.LeakyReLU(0.1), nn.AvgPool2d(2))
        s.fc = nn.Linear(24*4*4, 4)
    def forward(s, x):
        x = s.b1(s.stem(x))
        x = s.b2(torch.cat([s.a(x), s.b(x)], 1))
        return s.fc(torch.flatten(x, 1))
net = Net()
opt = torch.optim.Adam(net.parameters(), 3e-3)
X, Y = torch.tensor(xtr / np.float32(255)), torch.tensor(ytr)
for ep in range(25):
    perm = torch.randperm(len(X))
    for i in range(0, len(X), 64):
        idx = perm[i:i+64]; opt.zero_grad()
        loss = nn.functional.cross_entropy(net(X[idx]), Y[idx]); loss.backward(); opt.step()
net.eval()
acc = (net(torch.tensor(xte / np.float32(255))).argmax(1).numpy() == yte).mean()
print('test acc', acc)
torch.onnx.export(net, torch.zeros(1,3,16,16), 'models/mobile/mobile_se_opset13.onnx', opset_version=13, input_names=['x'], output_names=['y'], dynamic_axes={'x':{0:'N'},'y':{0:'N'}}, dynamo=False)

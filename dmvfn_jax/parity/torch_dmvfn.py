"""Independent PyTorch oracle of DMVFN, written from docs/reference-dmvfn.md only.

Used by the tests (to check the JAX port against PyTorch semantics, and to build
checkpoints in the official `module.`-prefixed format) and by the benchmarks (the PyTorch
side of bench/run.py, bench/train_memory.py and bench/export_speed.py). Needs torch; nothing
in the package imports it. NCHW, float32, plain torch.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = [160, 160, 160, 80, 80, 80, 44, 44, 44]
SCALES = [4, 4, 4, 2, 2, 2, 1, 1, 1]
N_TENSORS, N_PARAMS = 240, 3_559_930


def warp(img, flow):
    """Backward warp: sample img at (x + flow[:,0], y + flow[:,1]), border clamp."""
    B, _, H, W = img.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=img.dtype), torch.arange(W, dtype=img.dtype), indexing="ij")
    x = xs[None] + flow[:, 0]
    y = ys[None] + flow[:, 1]
    grid = torch.stack([x / ((W - 1) / 2) - 1, y / ((H - 1) / 2) - 1], dim=-1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


def resize(x, scale_factor):
    return F.interpolate(x, scale_factor=scale_factor, mode="bilinear", align_corners=False)


def unit(cin, cout, stride=1):
    """The spec's "conv unit": Conv2d(k3, pad1, bias) + per-channel PReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=True), nn.PReLU(cout))


class TorchMVFB(nn.Module):
    def __init__(self, in_planes=17, num_feature=160):
        super().__init__()
        nf = num_feature
        self.conv0 = nn.Sequential(unit(in_planes, nf // 2, 2), unit(nf // 2, nf, 2))
        self.convblock = nn.Sequential(unit(nf, nf), unit(nf, nf), unit(nf, nf))
        self.conv_sq = unit(nf, nf // 4)
        self.conv1 = nn.Sequential(unit(in_planes, 8, 2))
        self.convblock1 = nn.Sequential(unit(8, 8))
        self.lastconv = nn.ConvTranspose2d(nf // 4 + 8, 5, 4, 2, 1)

    def forward(self, x13, flow4, scale):
        if scale == 1:
            xs, fs = x13, flow4
        else:
            xs, fs = resize(x13, 1.0 / scale), resize(flow4, 1.0 / scale) * (1.0 / scale)
        a = self.conv0(torch.cat([xs, fs], 1))
        a = self.conv_sq(self.convblock(a) + a)
        a = resize(a, scale * 2)
        b = self.convblock1(self.conv1(torch.cat([x13, flow4], 1)))
        out = self.lastconv(torch.cat([a, b], 1))
        return out[:, 0:4], out[:, 4:5]


class TorchDMVFN(nn.Module):
    def __init__(self):
        super().__init__()
        for i, nf in enumerate(WIDTHS):
            setattr(self, f"block{i}", TorchMVFB(17, nf))
        self.routing = nn.Sequential(nn.Conv2d(6, 32, 3, 1, 1), nn.ReLU(), nn.Conv2d(32, 32, 3, 1, 1),
                                     nn.AdaptiveAvgPool2d(1))
        self.l1 = nn.Linear(32, 9)

    def blocks(self):
        return [getattr(self, f"block{i}") for i in range(9)]

    @staticmethod
    def merge(img0, img1, flow, mask):
        m = torch.sigmoid(mask)
        return torch.clamp(m * warp(img0, flow[:, :2]) + (1 - m) * warp(img1, flow[:, 2:4]), 0, 1)

    def routing_probs(self, img0, img1):
        v = torch.sigmoid(self.l1(self.routing(torch.cat([img0, img1], 1)).flatten(1)))
        v = v / (v.sum(1, keepdim=True) + 1e-6) * 4.5
        return torch.clamp(v, 0, 1)

    def _zero_state(self, img0):
        B, _, H, W = img0.shape
        return img0.new_zeros(B, 4, H, W), img0.new_zeros(B, 1, H, W)

    def forward_train(self, img0, img1, gates):
        """All 9 blocks run; returns 9 predictions (0-7 ungated, 8 gated)."""
        flow, mask = self._zero_state(img0)
        w0, w1 = img0, img1
        outs = []
        for i, (blk, s) in enumerate(zip(self.blocks(), SCALES)):
            flow_d, mask_d = blk(torch.cat([img0, img1, w0, w1, mask], 1), flow, s)
            if i < 8:
                outs.append(self.merge(img0, img1, flow + flow_d, mask + mask_d))
            g = gates[:, i].reshape(-1, 1, 1, 1).to(flow.dtype)
            flow = flow + g * flow_d
            mask = mask + g * mask_d
            w0, w1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        outs.append(self.merge(img0, img1, flow, mask))
        return outs

    def forward_infer(self, img0, img1, gates, first_decides=False, empty="merge"):
        """Only selected blocks run. first_decides: gates[0] decides for the batch (official quirk)."""
        flow, mask = self._zero_state(img0)
        w0, w1 = img0, img1
        ran = False
        for i, (blk, s) in enumerate(zip(self.blocks(), SCALES)):
            if first_decides:
                if gates[0, i] != 1:
                    continue
                g = torch.ones_like(gates[:, i]).reshape(-1, 1, 1, 1).to(flow.dtype)
            else:
                if not bool((gates[:, i] == 1).any()):
                    continue
                g = gates[:, i].reshape(-1, 1, 1, 1).to(flow.dtype)
            ran = True
            flow_d, mask_d = blk(torch.cat([img0, img1, w0, w1, mask], 1), flow, s)
            flow = flow + g * flow_d
            mask = mask + g * mask_d
            w0, w1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        if not ran and empty == "img0":
            return img0
        return self.merge(img0, img1, flow, mask)


@torch.no_grad()
def randomize_(model, seed):
    """Fill every parameter with seeded values: kaiming-uniform-like weights
    (bound 1/sqrt(fan_in)), biases U(-0.1, 0.1), PReLU slopes U(0.05, 0.5)."""
    gen = torch.Generator().manual_seed(seed)

    def u(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) * (hi - lo) + lo)

    for m in model.modules():
        if isinstance(m, nn.PReLU):
            u(m.weight, 0.05, 0.5)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.weight
            k = math.prod(w.shape[2:]) if w.dim() > 2 else 1
            if isinstance(m, nn.ConvTranspose2d):  # effective fan-in: in * (k / stride)^2
                fan_in = w.shape[0] * k / math.prod(m.stride)
            else:
                fan_in = w.shape[1] * k
            b = 1.0 / math.sqrt(fan_in)
            u(w, -b, b)
            if m.bias is not None:
                u(m.bias, -0.1, 0.1)
    return model


def official_state_dict(model):
    """State dict as the official checkpoints store it (DDP `module.` prefix)."""
    return {"module." + k: v.detach().clone() for k, v in model.state_dict().items()}


if __name__ == "__main__":
    torch.manual_seed(0)
    model = randomize_(TorchDMVFN(), seed=1).eval()
    sd = model.state_dict()
    assert len(sd) == N_TENSORS, len(sd)
    assert sum(v.numel() for v in sd.values()) == N_PARAMS
    assert sd["block0.lastconv.weight"].shape == (48, 5, 4, 4)
    assert sd["block8.conv0.0.1.weight"].shape == (22,)
    assert sd["routing.2.weight"].shape == (32, 32, 3, 3) and sd["l1.weight"].shape == (9, 32)
    osd = official_state_dict(model)
    assert all(k.startswith("module.") for k in osd) and len(osd) == N_TENSORS
    for H, W in [(64, 64), (48, 80)]:
        img0, img1 = torch.rand(2, 3, H, W), torch.rand(2, 3, H, W)
        with torch.no_grad():
            p = model.routing_probs(img0, img1)
            assert p.shape == (2, 9) and (p >= 0).all() and (p <= 1).all()
            ones, zeros = torch.ones(2, 9), torch.zeros(2, 9)
            outs = model.forward_train(img0, img1, ones)
            assert len(outs) == 9 and all(o.shape == (2, 3, H, W) and o.min() >= 0 and o.max() <= 1 for o in outs)
            for fd in (False, True):
                inf = model.forward_infer(img0, img1, ones, first_decides=fd)
                assert torch.allclose(inf, outs[8], atol=1e-6), (inf - outs[8]).abs().max()
            zero_merge = torch.clamp(0.5 * img0 + 0.5 * img1, 0, 1)
            assert torch.allclose(model.forward_train(img0, img1, zeros)[8], zero_merge, atol=1e-5)
            assert torch.allclose(model.forward_infer(img0, img1, zeros), zero_merge, atol=1e-5)
            assert torch.equal(model.forward_infer(img0, img1, zeros, empty="img0"), img0)
            # per-sample: sample 1 all-zero gates -> merge of zero state; sample 0 unaffected by batching
            g = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0, 1], [0] * 9], dtype=torch.float32)
            ps = model.forward_infer(img0, img1, g)
            assert torch.allclose(ps[1], zero_merge[1], atol=1e-5)
            solo = model.forward_infer(img0[:1], img1[:1], g[:1])
            assert torch.allclose(ps[:1], solo, atol=1e-5)
            assert torch.allclose(model.forward_train(img0, img1, g)[8], ps, atol=1e-5)
            # first_decides: sample 1 follows sample 0's gates
            fd = model.forward_infer(img0, img1, g, first_decides=True)
            assert torch.allclose(fd[1], model.forward_infer(img0[1:], img1[1:], g[:1])[0], atol=1e-5)
    # gradients flow through gates
    gates = torch.full((1, 9), 0.7, requires_grad=True)
    model.forward_train(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32), gates)[8].mean().backward()
    assert gates.grad is not None and gates.grad.abs().sum() > 0
    print("ok")

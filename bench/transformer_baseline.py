"""The byte-level transformer baseline for wikibench (uses torch; the cheaplm package never does).

    python bench/transformer_baseline.py --minutes 5 [--recipe speedrun|gpt2] [--json out.json] [--save judge.pt]

Two recipes; `speedrun` is the default and the yardstick (issue 22 item 1).

**speedrun** (the modded-nanogpt speedrun family, its late-2024/early-2025 single-GPU form):
- blocks: parameter-free RMSNorm (F.rms_norm, no weight, no bias) before attention and MLP and on
  the embedding; a learned pair of scalar gains per block mixes the residual with the normed
  embedding (x = l0*x + l1*x0, init 1, 0); causal attention through
  F.scaled_dot_product_attention(is_causal=True) (flash on the H200), head dim 128, QK-norm
  (RMSNorm of q and k), rotary positions (base 1024, the upper half of the frequencies left at 0, as
  in the speedrun), attention scale 0.12; MLP 4x wide with ReLU^2; linear layers without bias,
  uniform init with std 0.5/sqrt(fan_in); the attention out-projection, the MLP down-projection and
  the head start at zero; untied head; logits soft-capped at 15*tanh(z/15).
- optimisers: Muon for every 2-D matrix inside the blocks (q, k, v orthogonalised as three separate
  matrices): Nesterov momentum 0.95 (warmed up from 0.85 over the first 300 steps), 5 quintic
  Newton-Schulz steps in bf16, lr 0.05 scaled by sqrt(max(1, rows/cols)); matrices of one shape are
  orthogonalised together in one batched call. Adam (betas 0.8/0.95, eps 1e-10, no weight decay) for
  the embedding (lr 0.6), the head (lr 0.008) and the scalar gains (lr 0.04).
- schedule: no warm-up; every lr constant for the first 55% of the time budget, then linear to 0
  at its end (--cooldown 0.45). It is driven by elapsed seconds, not steps: the run does not know how
  many steps it will make.
- bf16 autocast; torch.compile of the model and of the Newton-Schulz step (--no-compile to run
  eagerly, e.g. where no compiler works).

**Size for the budget.** Chinchilla's 20 tokens per parameter is far out of reach: a 40 M-parameter
model would want 800 M bytes, the 155 MB train split 5 times over, in 5 minutes at ~1.3 MB/s it
sees ~400 MB. Measured point: 8 layers x 640 (39.3 M params in the blocks) trained 5 minutes on one
H200 with this recipe scored 1.1342 test bpb (issue 22), against 1.1997 for the gpt2 recipe's 8 x 512;
there it sees ~10 bytes per parameter and ~2.6 passes over train. At a fixed fraction of the
card's peak (~700-790 TFLOP/s bf16 dense; ~6 N FLOP per byte plus attention) bytes seen D ~ t / N,
so keeping D/N at the measured point's ~10 gives N ~ sqrt(minutes): 1 min -> 17.6 M, 2 -> 24.9 M,
5 -> 39.3 M, 8 -> 49.7 M. Depth before width where the two cost the same (at these sizes deeper
models score better per parameter), widths multiples of 128 (head dim 128, tensor-core tiles):

    minutes  < 1.5   6 x 512   18.9 M   (4 heads)
             < 3.5   8 x 512   25.2 M   (4 heads)
             < 6.5   8 x 640   39.3 M   (5 heads; the measured point)
             else   10 x 640   49.2 M   (5 heads; ~3.3 passes at 8 min, below the ~4 where repeats
                                         stop paying as much as fresh text, Muennighoff et al. 2023)

Context 1024 bytes at every budget (attention is ~T/(12 d) = 13-17% of the FLOPs at these widths,
and the test scoring below needs >= 512 bytes of context); batch 64 windows x 1024 = 64 K bytes a
step: at these sizes 2,000-10,000 optimiser steps fit a budget (the run is step-limited more than
noise-limited; a bigger batch buys little on one card whose matmuls are already 64 K rows tall).
--layers/--width/--batch/--ctx override any of it. The table is derived from one measured point
and a rule, not from a sweep: the H200 runs at 1, 2, 5 and 8 minutes (and neighbours of each shape,
on --val) are its check.

**gpt2** (the recipe of the earlier baseline, --recipe gpt2): 8 layers, width 512, 8 heads, RoPE
(base 10000), learnable RMSNorm, ReLU^2 MLP, untied head, PyTorch's default init; AdamW lr 2e-3, betas
(0.9, 0.95), weight decay 0.1 on matrices; 200 warm-up steps then cosine to 10% over the time
budget; bf16 autocast, torch.compile.

**Budget.** --minutes is the wall-clock training time: it counts everything a training step does
(batch sampling on the GPU, forward, backward, optimiser steps, the lr schedule, the loss logging's
syncs). It excludes loading the split onto the GPU, building the model, and the compile warm-up
(3 steps, after which the weights, the optimiser states and the batch generator are put back as
they were: the warm-up teaches nothing), and the final evaluation (timed and reported separately,
as bench/wikibench.py does for cheaplm).

Test: sliding windows of 1024 with stride 512, so every scored byte sees >= 512 bytes of context
(the first window scores all its bytes). --val scores the 2,000,000 val bytes before the test
instead (bench/wikibench_data.py --val). --other DIR also scores every split of a `cheaplm
prepare` directory (text none of it was trained on: `cheaplm prepare
../shared/data/enwik8.head4154399.xz`), reported as other_bpb.

--save keeps the trained weights with the recipe and shape ({"recipe", "config", "state_dict"});
load_model() reads that and the older bare state_dict (the gpt2 8x512): bench/language_quality.py
uses it for its judge. --selftest checks the Newton-Schulz step and exits.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cheaplm.shards import load_split, read_manifest  # noqa: E402
from wikibench_data import build  # noqa: E402

CTX, LAYERS, WIDTH, HEADS, BATCH = 1024, 8, 512, 8, 64  # the gpt2 recipe's shape

# speedrun shapes by budget: (minutes below which it applies, layers, width); see the docstring
SPEEDRUN_SHAPES = [(1.5, 6, 512), (3.5, 8, 512), (6.5, 8, 640), (math.inf, 10, 640)]


# ---- gpt2 recipe (the earlier baseline) ---------------------------------------------------------

class Block(nn.Module):
    def __init__(self, width=WIDTH, heads=HEADS):
        super().__init__()
        self.width, self.heads = width, heads
        self.n1 = nn.RMSNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.n2 = nn.RMSNorm(width)
        self.fc = nn.Linear(width, 4 * width, bias=False)
        self.out = nn.Linear(4 * width, width, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, self.heads, self.width // self.heads).unbind(2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, self.width))
        return x + self.out(F.relu(self.fc(self.n2(x))).square())


def rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class GPT(nn.Module):
    """The gpt2 recipe's model; GPT() is the 8 x 512 of the earlier baseline (and of old judge.pt files)."""

    def __init__(self, layers=LAYERS, width=WIDTH, heads=HEADS, ctx=CTX):
        super().__init__()
        self.emb = nn.Embedding(256, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = nn.RMSNorm(width)
        self.head = nn.Linear(width, 256, bias=False)
        hd = width // heads
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(ctx).float(), inv)
        self.register_buffer("cos", ang.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", ang.sin()[None, :, None, :], persistent=False)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.emb(idx)
        for blk in self.blocks:
            x = blk(x, self.cos[:, :t], self.sin[:, :t])
        return self.head(self.norm(x)).float()


# ---- speedrun recipe ----------------------------------------------------------------------------

def rms(x):
    return F.rms_norm(x, (x.size(-1),))


def linear(fan_in, fan_out, zero=False):
    lin = nn.Linear(fan_in, fan_out, bias=False)
    with torch.no_grad():
        if zero:
            lin.weight.zero_()
        else:
            bound = math.sqrt(3) * 0.5 / math.sqrt(fan_in)  # uniform with std 0.5/sqrt(fan_in)
            lin.weight.uniform_(-bound, bound)
    return lin


class SpeedrunBlock(nn.Module):
    def __init__(self, width, head_dim):
        super().__init__()
        self.width, self.hd = width, head_dim
        self.heads = width // head_dim
        self.qkv = linear(width, 3 * width)
        self.qkv.weight.muon_view = (3, width, width)  # q, k and v orthogonalised separately
        self.proj = linear(width, width, zero=True)
        self.fc = linear(width, 4 * width)
        self.down = linear(4 * width, width, zero=True)
        self.lambdas = nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, x, x0, cos, sin):
        b, t, _ = x.shape
        x = self.lambdas[0] * x + self.lambdas[1] * x0
        q, k, v = self.qkv(rms(x)).view(b, t, 3, self.heads, self.hd).unbind(2)
        q, k = rotary(rms(q), cos, sin), rotary(rms(k), cos, sin)  # QK-norm, then rotary
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True, scale=0.12)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, self.width))
        return x + self.down(F.relu(self.fc(rms(x))).square())


def rotary(x, cos, sin):
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1).type_as(x)


class SpeedrunGPT(nn.Module):
    def __init__(self, layers, width, head_dim=128, ctx=CTX, softcap=15.0):
        super().__init__()
        assert width % head_dim == 0 and head_dim % 4 == 0, "width must be a multiple of head_dim (a multiple of 4)"
        self.softcap = softcap
        self.emb = nn.Embedding(256, width)
        self.blocks = nn.ModuleList(SpeedrunBlock(width, head_dim) for _ in range(layers))
        self.head = linear(width, 256, zero=True)
        freq = (1 / 1024) ** torch.linspace(0, 1, steps=head_dim // 4)
        freq = torch.cat([freq, freq.new_zeros(head_dim // 4)])
        ang = torch.outer(torch.arange(ctx).float(), freq)
        self.register_buffer("cos", ang.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", ang.sin()[None, :, None, :], persistent=False)

    def forward(self, idx):
        t = idx.shape[1]
        x = x0 = rms(self.emb(idx))
        for blk in self.blocks:
            x = blk(x, x0, self.cos[:, :t], self.sin[:, :t])
        logits = self.head(rms(x)).float()
        return self.softcap * torch.tanh(logits / self.softcap)


def newton_schulz(G, steps: int = 5):
    """Quintic Newton-Schulz iteration towards the orthogonal polar factor U V^T of G (batched over
    leading dims), in bf16, with the speedrun's coefficients: they trade exactness for speed, so the
    singular values land in roughly [0.7, 1.2], not at exactly 1."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16()
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-Schulz (Keller Jordan's, single-device): SGD-Nesterov
    momentum whose update is replaced by its nearest semi-orthogonal matrix. A parameter may carry
    `muon_view` (a stack of matrices to orthogonalise separately); updates of one matrix shape are
    orthogonalised in one batched call."""

    def __init__(self, params, lr=0.05, momentum=0.95, nesterov=True, ns_steps=5, ns=newton_schulz):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))
        self.ns = ns

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            buckets: dict[tuple, list] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "buf" not in st:
                    st["buf"] = torch.zeros_like(p.grad)
                buf = st["buf"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                u = p.grad.lerp_(buf, group["momentum"]) if group["nesterov"] else buf
                u = u.view(getattr(p, "muon_view", p.shape))
                u = u if u.dim() == 3 else u[None]
                buckets.setdefault(tuple(u.shape[1:]), []).append((p, u))
            for (rows, cols), items in buckets.items():
                o = self.ns(torch.cat([u for _, u in items]), group["ns_steps"])
                scale = -group["lr"] * max(1.0, rows / cols) ** 0.5
                i = 0
                for p, u in items:
                    p.add_(o[i:i + len(u)].view_as(p), alpha=scale)
                    i += len(u)


def selftest() -> None:
    """The Newton-Schulz step on random Gaussian matrices: singular values near 1 and the result close
    to the exact polar factor U V^T. Five quintic steps lift a singular value from at least ~1e-3 of
    the matrix's Frobenius norm into the band; smaller ones stay small (a square matrix's tail), as in
    the speedrun."""
    g = torch.Generator().manual_seed(0)
    cases = [((256, 1024), 1.0), ((1024, 256), 1.0), ((3, 128, 512), 1.0), ((512, 512), 0.95)]
    for shape, need in cases:
        G = torch.randn(*shape, generator=g)
        O = newton_schulz(G).float()
        s_in = torch.linalg.svdvals(G)
        s = torch.linalg.svdvals(O)
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        polar = U @ Vh
        cos = (O * polar).sum() / (O.norm() * polar.norm())
        band = ((s > 0.6) & (s < 1.25)).float().mean().item()
        print(f"[selftest] newton_schulz {shape}: input singular values {s_in.min():.3g}..{s_in.max():.3g}; "
              f"output {s.min():.3f}..{s.max():.3f} (mean {s.mean():.3f}, {band:.1%} in 0.6..1.25); "
              f"cosine to U V^T {cos:.4f}")
        assert band >= need and s.max() < 1.25, "singular values not near 1"
        assert cos > 0.97, "not near the polar factor"
    # one Muon step on a 2-D and a stacked parameter: the update is the orthogonalised momentum
    p = nn.Parameter(torch.zeros(3 * 64, 64))
    p.muon_view = (3, 64, 64)
    q = nn.Parameter(torch.zeros(256, 64))
    opt = Muon([p, q], lr=1.0, momentum=0.0, nesterov=False)
    p.grad, q.grad = torch.randn(3 * 64, 64, generator=g), torch.randn(256, 64, generator=g)
    opt.step()
    sp = torch.linalg.svdvals(-p.detach().view(3, 64, 64).float())
    sq = torch.linalg.svdvals(-q.detach().float()) / 2  # scaled by sqrt(256/64)
    print(f"[selftest] Muon step: stacked 3x64x64 singular values {sp.min():.3f}..{sp.max():.3f}, "
          f"256x64 (/2) {sq.min():.3f}..{sq.max():.3f}")
    assert ((sp > 0.6) & (sp < 1.25)).float().mean() >= 0.9 and sp.max() < 1.25  # square: a small tail
    assert 0.6 < sq.min() and sq.max() < 1.25
    print("[selftest] ok")


# ---- running ------------------------------------------------------------------------------------

def speedrun_shape(minutes: float) -> tuple[int, int]:
    return next((layers, width) for below, layers, width in SPEEDRUN_SHAPES if minutes < below)


def build_model(recipe: str, layers: int, width: int, head_dim: int, ctx: int) -> nn.Module:
    if recipe == "gpt2":
        return GPT(layers, width, max(1, width // 64), ctx)
    return SpeedrunGPT(layers, width, head_dim, ctx)


def load_model(path, device="cpu") -> nn.Module:
    """A model saved by --save (recipe, config, state_dict) or an older bare state_dict (GPT())."""
    obj = torch.load(path, map_location=device)
    if isinstance(obj, dict) and "state_dict" in obj:
        c = obj["config"]
        model = build_model(obj["recipe"], c["layers"], c["width"], c["head_dim"], c["ctx"])
        model.load_state_dict(obj["state_dict"])
    else:
        model = GPT()
        model.load_state_dict(obj)
    return model.to(device).eval()


def make_optimizers(recipe: str, model: nn.Module, args, ns):
    """[(optimizer, schedule(frac, step) -> lr multiplier)] with each group's base lr in group["base_lr"]."""
    if recipe == "gpt2":
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=2e-3, betas=(0.9, 0.95), fused=args.device == "cuda")
        opts = [opt]
    else:
        matrices = [p for p in model.blocks.parameters() if p.dim() >= 2]
        scalars = [p for p in model.blocks.parameters() if p.dim() < 2]
        adam = torch.optim.Adam([dict(params=[model.emb.weight], lr=args.embed_lr),
                                 dict(params=[model.head.weight], lr=args.head_lr),
                                 dict(params=scalars, lr=args.scalar_lr)],
                                betas=(0.8, 0.95), eps=1e-10, fused=args.device == "cuda")
        muon = Muon(matrices, lr=args.muon_lr, momentum=0.95, ns=ns)
        assert sum(p.numel() for o in (adam, muon) for g in o.param_groups for p in g["params"]) == \
            sum(p.numel() for p in model.parameters()), "a parameter without an optimiser"
        opts = [adam, muon]
    for o in opts:
        for g in o.param_groups:
            g["base_lr"] = g["lr"]
    return opts


def lr_multiplier(recipe: str, frac: float, step: int, cooldown: float) -> float:
    if recipe == "gpt2":
        if step < 200:
            return (step + 1) / 200
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    return 1.0 if frac < 1 - cooldown else max(0.0, (1 - frac) / cooldown)


@torch.no_grad()
def score(model, data: np.ndarray, ctx: int, device: str) -> tuple[float, int]:
    """bpb over `data`: windows of ctx, stride ctx/2; each byte scored once, by the first window in
    which it has >= ctx/2 bytes of context (all bytes of the first window)."""
    data = torch.from_numpy(data.astype(np.int64)).to(device)
    total = 0.0
    scored = 0
    starts = list(range(0, max(len(data) - ctx, 0) + 1, ctx // 2))
    if starts[-1] + ctx < len(data):
        starts.append(len(data) - ctx)
    with torch.autocast(device, dtype=torch.bfloat16):
        for i in range(0, len(starts), 32):
            group = starts[i:i + 32]
            x = torch.stack([data[s:s + ctx] for s in group])
            logits = model(x[:, :-1])
            lp = F.log_softmax(logits.float(), dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)  # predicts x[1:]
            for r, s in enumerate(group):
                # bytes s+1 .. s+ctx-1 are predicted; keep those not scored by an earlier window
                first_new = 1 if s == 0 else max(1, scored - s)
                total -= lp[r, first_new - 1:].double().sum().item()
                scored = s + ctx
    return total / math.log(2) / (scored - 1), scored - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="training wall-clock budget (see Budget above)")
    ap.add_argument("--recipe", choices=["speedrun", "gpt2"], default="speedrun")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    ap.add_argument("--split-dir", default=str(Path(__file__).resolve().parent / "work" / "wikibench"))
    ap.add_argument("--val", action="store_true", help="score the val bytes before the test (split dir + '-val')")
    ap.add_argument("--test-bytes", type=int, default=None)
    ap.add_argument("--other", default=None, help="a `cheaplm prepare` directory: also score all of its splits")
    ap.add_argument("--json", default=None)
    ap.add_argument("--save", default=None, help="write the trained weights with recipe and shape here")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu (cpu: a check of this script, not a run)")
    ap.add_argument("--no-compile", action="store_true", help="run eagerly (no torch.compile)")
    ap.add_argument("--layers", type=int, default=None, help="default: by budget (speedrun) or 8 (gpt2)")
    ap.add_argument("--width", type=int, default=None, help="default: by budget (speedrun) or 512 (gpt2)")
    ap.add_argument("--head-dim", type=int, default=128, help="speedrun only (gpt2: 64)")
    ap.add_argument("--ctx", type=int, default=CTX)
    ap.add_argument("--batch", type=int, default=BATCH, help="windows of ctx bytes per step")
    ap.add_argument("--muon-lr", type=float, default=0.05)
    ap.add_argument("--embed-lr", type=float, default=0.6)
    ap.add_argument("--head-lr", type=float, default=0.008)
    ap.add_argument("--scalar-lr", type=float, default=0.04)
    ap.add_argument("--cooldown", type=float, default=0.45, help="speedrun: fraction of the budget the lr decays over")
    ap.add_argument("--selftest", action="store_true", help="check the Newton-Schulz step and exit")
    args = ap.parse_args()
    if args.selftest:
        selftest()
        return
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = args.device
    if args.recipe == "speedrun":
        layers, width = speedrun_shape(args.minutes)
        head_dim = args.head_dim
    else:
        layers, width, head_dim = LAYERS, WIDTH, 64
    layers, width = args.layers or layers, args.width or width
    ctx, bsz = args.ctx, args.batch
    config = f"transformer-{args.recipe} {layers}x{width}"
    log = lambda msg: print(f"[{config}] {msg}", flush=True)  # noqa: E731

    torch.manual_seed(0)
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    split_dir = args.split_dir.rstrip("/") + "-val" if args.val else args.split_dir
    split = build(Path(split_dir), Path(args.data), val=args.val)
    train = torch.from_numpy(load_split(split, "train")).to(dev)  # uint8; windows are widened per batch
    test = load_split(split, "test")
    if args.test_bytes:
        test = test[: args.test_bytes]
    model = build_model(args.recipe, layers, width, head_dim, ctx).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    compiled = not args.no_compile
    cmodel = torch.compile(model) if compiled else model
    ns = torch.compile(newton_schulz, dynamic=False) if compiled else newton_schulz
    log(f"{n_params / 1e6:.2f} M params, ctx {ctx}, batch {bsz} x {ctx}, device {dev}, "
        f"compile {'on' if compiled else 'off'}, {len(train) / 1e6:.1f} MB train")

    gen = torch.Generator(device=dev)
    off = torch.arange(ctx + 1, device=dev)

    def batch():
        ix = torch.randint(0, len(train) - ctx - 1, (bsz,), device=dev, generator=gen)
        w = train[ix[:, None] + off].long()
        return w[:, :-1], w[:, 1:]

    def step(opts, mult, n):
        for o in opts:
            for g in o.param_groups:
                g["lr"] = g["base_lr"] * mult
            if isinstance(o, Muon):
                for g in o.param_groups:
                    g["momentum"] = 0.85 + 0.10 * min(n / 300, 1.0)
        x, y = batch()
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = F.cross_entropy(cmodel(x).view(-1, 256), y.reshape(-1))
        loss.backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        return loss.detach()

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    # compile warm-up: a few real steps, then weights, optimiser states and batches put back
    t0 = time.perf_counter()
    initial = copy.deepcopy(model.state_dict())
    opts = make_optimizers(args.recipe, model, args, ns)
    for n in range(3):
        step(opts, 1.0, n)
    sync()
    model.load_state_dict(initial)
    del initial
    opts = make_optimizers(args.recipe, model, args, ns)
    gen.manual_seed(0)
    sync()
    compile_s = time.perf_counter() - t0
    log(f"compile warm-up {compile_s:.1f} s")

    budget = args.minutes * 60
    curve = []
    acc = torch.zeros((), device=dev)
    acc_n = 0
    next_log = budget / 20
    t0 = time.perf_counter()
    n = 0
    while True:
        el = time.perf_counter() - t0
        if el >= budget:
            break
        acc += step(opts, lr_multiplier(args.recipe, el / budget, n, args.cooldown), n)
        acc_n += 1
        n += 1
        if el >= next_log:  # a sync ~20 times a run: the mean train loss since the last line
            bpb = acc.item() / acc_n / math.log(2)
            curve.append([n, round(el, 1), round(bpb, 4)])
            log(f"step {n} train {bpb:.3f} bpb elapsed {el:.0f}s")
            acc.zero_()
            acc_n = 0
            next_log += budget / 20
    sync()
    train_s = time.perf_counter() - t0
    if acc_n:
        bpb = acc.item() / acc_n / math.log(2)
        curve.append([n, round(train_s, 1), round(bpb, 4)])
        log(f"step {n} train {bpb:.3f} bpb elapsed {train_s:.0f}s (end)")

    model.eval()  # scored eagerly (flash attention all the same): no recompile for the eval shapes
    t1 = time.perf_counter()
    bpb, n_scored = score(model, test, ctx, dev)
    eval_s = time.perf_counter() - t1
    commit = os.environ.get("CHEAPLM_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    out = {"label": "transformer", "model": "transformer", "config": config, "recipe": args.recipe,
           "layers": layers, "width": width, "head_dim": head_dim if args.recipe == "speedrun" else 64,
           "ctx": ctx, "batch": bsz, "date": time.strftime("%Y-%m-%d"),
           "card": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "device": dev, "commit": commit,
           "command": " ".join(sys.argv), "minutes": args.minutes, "steps": n, "params": n_params,
           "train_seconds": train_s, "compile_seconds": compile_s,
           "train_mb_per_s": n * bsz * ctx / 1e6 / train_s, "passes": n * bsz * ctx / len(train),
           "split": "val" if args.val else "test", "test_bytes_scored": n_scored,
           "test_bpb": bpb, "eval_seconds": eval_s, "curve": curve}
    if args.recipe == "speedrun":
        out["hyper"] = {"muon_lr": args.muon_lr, "embed_lr": args.embed_lr, "head_lr": args.head_lr,
                        "scalar_lr": args.scalar_lr, "cooldown": args.cooldown}
    if args.json:  # written now and again below: a run cut short while scoring --other keeps its test row
        Path(args.json).write_text(json.dumps(out, indent=1))
    if args.other:
        other_dir = Path(args.other)
        splits = read_manifest(other_dir)["splits"]
        parts = [load_split(other_dir, s) for s, info in splits.items() if any(sh["bytes"] for sh in info["shards"])]
        t1 = time.perf_counter()
        out["other_dir"] = str(other_dir)
        out["other_bpb"], out["other_bytes_scored"] = score(model, np.concatenate(parts), ctx, dev)
        out["other_eval_seconds"] = time.perf_counter() - t1
    print(json.dumps({k: v for k, v in out.items() if k != "curve"}, indent=1))
    other = f" | other {out['other_bpb']:.4f}" if args.other else ""
    print(f"| {config} | {out['card']} | {args.minutes} | {out['train_mb_per_s']:.2f} MB/s | {bpb:.4f}{other} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    if args.save:
        torch.save({"recipe": args.recipe, "config": {"layers": layers, "width": width, "head_dim": head_dim,
                                                      "ctx": ctx}, "state_dict": model.state_dict()}, args.save)


if __name__ == "__main__":
    main()

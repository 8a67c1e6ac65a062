#!/usr/bin/env python3
"""rankcollapse against the same simulation written in PyTorch, timed side by side.

The peer is what a researcher would write: f32 tensors, the plain representation X (n x d per
sequence, a batch of sequences at once), torch's scaled_dot_product_attention (flash / memory-
efficient kernels where torch has them: no n x n matrix for the full and causal masks), LayerNorm
through torch.nn.functional. It computes what rankcollapse computes:

* the same model as rankcollapse's Config for the options it covers: softmax attention with
  H heads of rank r and value width dv (scores tau <x_i W_Q, x_j W_K>, tau = 1/sqrt(r) unless
  --temperature), masks full / causal / window:W / causal-window:W, --remove-outlier
  ((A - 11^T/n) V), output projection (identity or gaussian), norm none / pre / post LayerNorm,
  RMSNorm or sphere with eps, gain and bias, skip none / standard / scaled:A,B, MLP none /
  relu:K / gelu:K (exact erf GELU), the sublayer order of src/model/mod.rs apply_layer;
* the same weights and inputs, bit for bit before rounding to f32: rankcollapse draws every number
  from Philox4x32-10 with Box-Muller (src/rng.rs) in the stream layout of src/model/mod.rs
  (input_tokens, layer_weights_f64), and philox_normals() below reproduces it in numpy, so both
  programs simulate the very same sequences;
* the same metrics per layer and sequence (layer 0 = input): res_fro, log10_res_fro, mu,
  res_dong, stable_rank, gram_stable_rank, stable_rank_centered, sigma_ratio, mean_abs_cos
  (the spectra through the d x d Gram matrix and eigvalsh; mean |cos| in row blocks, never
  n x n), then their means over sequences.

Not covered (refused with a message): Markov / uniform / identity attention, orthogonal weights,
per-sequence weights, shared layers, inputs other than gaussian, the attention spectrum and
entropy (they need the n x n matrix; the benchmark runs use --spectrum-every 0).

The CHECK: per layer, the means over sequences of log10_res_fro, stable_rank and mean_abs_cos of
the two programs must agree within --tol (default 2e-3: absolute on log10_res_fro and
mean_abs_cos, relative on stable_rank) at every layer where the residual is above f32
resolution (mean log10_res_fro > -5). Since the sequences are identical the difference is
rounding only (f32 here, the engine's precision there), far below the sampling error of a
mean (std / sqrt(sequences), printed beside it). The script exits with status 1 when the check
fails.

Timing: the peer's inputs and weights are generated before its clock starts (numpy Philox is
not what a researcher would time); rankcollapse is timed as a whole process (startup, its own
generation on the fly, JSON output): the ratio is conservative for rankcollapse. Runs alternate
(ours, peer, ours, peer, ...) after one untimed warm-up of each; medians are printed.

Run it through scripts/bench_vs_pytorch.sh (installation notes there).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# --- Philox4x32-10 and the stream layout of src/rng.rs ---------------------------------------

MASK32 = np.uint64(0xFFFFFFFF)
M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = 0x9E3779B9, 0xBB67AE85
PURPOSE = {"input": 0, "input_shared": 1, "query": 2, "key": 3, "value": 4, "output": 5,
           "mlp_in": 6, "mlp_out": 7}
SHARED_SEQUENCE = 0xFFFFFFFF


def stream(purpose, layer, head):
    return (PURPOSE[purpose] << 28) | ((layer & 0xFFFFF) << 8) | (head & 0xFF)


def philox_normals(seed, strm, sequence, length):
    """Normals 0..length-1 of the block (seed, stream, sequence), as rng::GaussianBlock::normals."""
    nq = (length + 3) // 4
    q = np.arange(nq, dtype=np.uint64)
    c0, c1 = q & MASK32, q >> np.uint64(32)
    c2 = np.full(nq, sequence, dtype=np.uint64)
    c3 = np.full(nq, strm, dtype=np.uint64)
    k0, k1 = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    for rnd in range(10):
        if rnd > 0:
            k0, k1 = (k0 + W0) & 0xFFFFFFFF, (k1 + W1) & 0xFFFFFFFF
        p0, p1 = M0 * c0, M1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
    u = [(w.astype(np.float64) + 0.5) * (1.0 / 4294967296.0) for w in (c0, c1, c2, c3)]
    ra, rb = np.sqrt(-2.0 * np.log(u[0])), np.sqrt(-2.0 * np.log(u[2]))
    ta, tb = 2.0 * math.pi * u[1], 2.0 * math.pi * u[3]
    out = np.stack([ra * np.cos(ta), ra * np.sin(ta), rb * np.cos(tb), rb * np.sin(tb)], axis=1)
    return out.reshape(-1)[:length]


def parse_weights(spec):
    """'gaussian[:STD]' | 'identity' | 'none' -> (kind, std or None)."""
    if spec.startswith("gaussian"):
        return ("gaussian", float(spec.split(":")[1]) if ":" in spec else None)
    if spec in ("identity", "none"):
        return (spec, None)
    raise SystemExit(f"the PyTorch peer does not cover weights {spec!r} (gaussian[:STD], identity, none)")


def weight_matrix(spec, rows, cols, seed, strm):
    kind, std = parse_weights(spec)
    if kind == "gaussian":
        std = 1.0 / math.sqrt(rows) if std is None else std
        return philox_normals(seed, strm, SHARED_SEQUENCE, rows * cols).reshape(rows, cols) * std
    if kind == "identity":
        return np.eye(rows)
    return None


# --- the configurations ------------------------------------------------------------------------

BASE = dict(depth=8, tokens=32, width=32, heads=1, mask="full", temperature=None,
            remove_outlier=False, norm="none", norm_eps=1e-5, norm_gain=1.0, norm_bias=0.0,
            skip="none", mlp="none", mlp_weights="gaussian", value="gaussian", qk="gaussian",
            out_proj="identity", sequences=16, seed=0)

CONFIGS = {
    "small": [dict(BASE, depth=16, tokens=256, width=64, heads=4, sequences=256,
                   norm="post-ln", skip="standard")],
    "gpu": [dict(BASE, depth=32, tokens=1024, width=128, heads=8, sequences=1024, mask=m)
            for m in ("full", "causal")],
    "long": [dict(BASE, depth=4, tokens=65536, width=64, heads=1, sequences=8)],
}

# What runs on the CPU by default: full size for small; the others are scaled down in sequences
# and depth (the cost of both programs is linear in sequences x depth) and extrapolated.
CPU_SCALE = {"small": None, "gpu": dict(sequences=2, depth=1), "long": dict(sequences=2, depth=1)}


def cli_args(cfg):
    a = ["--depth", cfg["depth"], "--tokens", cfg["tokens"], "--width", cfg["width"],
         "--heads", cfg["heads"], "--mask", cfg["mask"], "--norm", cfg["norm"],
         "--norm-eps", cfg["norm_eps"], "--norm-gain", cfg["norm_gain"],
         "--norm-bias", cfg["norm_bias"], "--skip", cfg["skip"], "--mlp", cfg["mlp"],
         "--mlp-weights", cfg["mlp_weights"], "--value", cfg["value"], "--qk", cfg["qk"],
         "--out-proj", cfg["out_proj"], "--sequences", cfg["sequences"], "--seed", cfg["seed"],
         "--spectrum-every", 0]
    if cfg["temperature"] is not None:
        a += ["--temperature", cfg["temperature"]]
    if cfg["remove_outlier"]:
        a += ["--remove-outlier"]
    return [str(x) for x in a]


def describe(cfg):
    return (f"depth {cfg['depth']}, n {cfg['tokens']}, d {cfg['width']}, {cfg['heads']} heads, "
            f"{cfg['sequences']} sequences, mask {cfg['mask']}, norm {cfg['norm']}, "
            f"skip {cfg['skip']}, mlp {cfg['mlp']}")


# --- the peer ----------------------------------------------------------------------------------

class Peer:
    """The simulation in PyTorch, f32, plain X."""

    def __init__(self, cfg, device):
        self.cfg, self.dev = cfg, device
        d, h = cfg["width"], cfg["heads"]
        self.r = d // h
        self.dv = d // h
        self.tau = cfg["temperature"] if cfg["temperature"] is not None else 1.0 / math.sqrt(self.r)
        self.hidden = 0
        if cfg["mlp"] != "none":
            act, k = cfg["mlp"].split(":")
            self.act = {"relu": F.relu, "gelu": F.gelu}[act]
            self.hidden = round(float(k) * d)
        norm = cfg["norm"]
        self.pre, self.post = norm.startswith("pre"), norm.startswith("post") or norm in ("rms", "sphere")
        self.norm_kind = None if norm == "none" else norm.split("-")[-1]
        mask = cfg["mask"]
        self.causal = mask == "causal"
        self.window = None
        if mask.startswith("window:") or mask.startswith("causal-window:"):
            w = int(mask.split(":")[1])
            i = torch.arange(cfg["tokens"], device=device)
            diff = i[:, None] - i[None, :]
            self.window = (diff.abs() < w) if mask.startswith("window") else ((diff >= 0) & (diff < w))
        elif mask not in ("full", "causal"):
            raise SystemExit(f"the PyTorch peer does not cover mask {mask!r}")
        self.skip = {"none": (0.0, 1.0), "standard": (1.0, 1.0)}.get(cfg["skip"])
        if self.skip is None:
            a, b = cfg["skip"].split(":")[1].split(",")
            self.skip = (float(a), float(b))

    def weights(self):
        """Per layer: W_Q, W_K, W_V as (d, H r) / (d, H dv) (heads side by side), W_O, MLP."""
        cfg, d, h, seed = self.cfg, self.cfg["width"], self.cfg["heads"], self.cfg["seed"]
        t = lambda a: None if a is None else torch.tensor(a, dtype=torch.float32, device=self.dev)
        layers = []
        for layer in range(cfg["depth"]):
            cat = lambda p, spec, cols: np.concatenate(
                [weight_matrix(spec, d, cols, seed, stream(p, layer, k)) for k in range(h)], axis=1)
            wo = weight_matrix(cfg["out_proj"], h * self.dv, d, seed, stream("output", layer, 0))
            mlp = None
            if self.hidden:
                mlp = (t(weight_matrix(cfg["mlp_weights"], d, self.hidden, seed, stream("mlp_in", layer, 0))),
                       t(weight_matrix(cfg["mlp_weights"], self.hidden, d, seed, stream("mlp_out", layer, 0))))
            layers.append(dict(q=t(cat("query", cfg["qk"], self.r)), k=t(cat("key", cfg["qk"], self.r)),
                               v=t(cat("value", cfg["value"], self.dv)),
                               o=None if parse_weights(cfg["out_proj"])[0] == "identity" else t(wo),
                               mlp=mlp))
        return layers

    def inputs(self, first, count):
        n, d, seed = self.cfg["tokens"], self.cfg["width"], self.cfg["seed"]
        x = np.stack([philox_normals(seed, stream("input", 0, 0), s, n * d).reshape(n, d)
                      for s in range(first, first + count)])
        return torch.tensor(x, dtype=torch.float32, device=self.dev)

    def norm(self, x):
        c = self.cfg
        if self.norm_kind == "ln":
            y = F.layer_norm(x, (x.shape[-1],), eps=c["norm_eps"])
        elif self.norm_kind == "rms":
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c["norm_eps"])
        else:  # sphere
            y = x / x.norm(dim=-1, keepdim=True)
        return y * c["norm_gain"] + c["norm_bias"]

    def attention(self, x, w):
        s, n, _ = x.shape
        h = self.cfg["heads"]
        q = (x @ w["q"]).view(s, n, h, self.r).transpose(1, 2)
        k = (x @ w["k"]).view(s, n, h, self.r).transpose(1, 2)
        v = (x @ w["v"]).view(s, n, h, self.dv).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.window, is_causal=self.causal,
                                           scale=self.tau)
        if self.cfg["remove_outlier"]:
            o = o - v.mean(2, keepdim=True)
        o = o.transpose(1, 2).reshape(s, n, h * self.dv)
        return o if w["o"] is None else o @ w["o"]

    def layer(self, x, w):
        a, b = self.skip
        y = x
        for sub in range(1 + (w["mlp"] is not None)):
            inp = self.norm(y) if self.pre else y
            if sub == 0:
                f = self.attention(inp, w)
            else:
                f = self.act(inp @ w["mlp"][0]) @ w["mlp"][1]
            y = f if (a, b) == (0.0, 1.0) else a * y + b * f
            if self.post:
                y = self.norm(y)
        return y

    def run(self, xs, weights, chunk):
        """Per-layer lists of per-sequence metric dicts (numpy arrays over sequences)."""
        out = [dict() for _ in range(self.cfg["depth"] + 1)]
        with torch.inference_mode():
            for c0 in range(0, xs.shape[0], chunk):
                x = xs[c0:c0 + chunk]
                parts = [metrics(x)]
                for w in weights:
                    x = self.layer(x, w)
                    parts.append(metrics(x))
                for l, m in enumerate(parts):
                    for k, v in m.items():
                        out[l].setdefault(k, []).append(v.double().cpu().numpy())
        return [{k: np.concatenate(v) for k, v in layer.items()} for layer in out]


def mean_abs_cos(x, block=1024):
    """Mean |cos| over pairs of distinct tokens, in row blocks (no n x n matrix)."""
    s, n, _ = x.shape
    u = x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    total = torch.zeros(s, dtype=torch.float64, device=x.device)
    for i0 in range(0, n, block):
        g = (u[:, i0:i0 + block] @ u.transpose(1, 2)).abs().clamp_max(1.0)
        total += g.sum((1, 2)).double()
        total -= torch.diagonal(g[:, :, i0:i0 + block], dim1=1, dim2=2).sum(-1).double()
    return total / (n * (n - 1))


def metrics(x):
    n = x.shape[1]
    c = x - x.mean(1, keepdim=True)
    fro2, cfro2 = x.pow(2).sum((1, 2)), c.pow(2).sum((1, 2))
    norm_1inf = lambda m: (m.abs().sum(1).amax(1) * m.abs().sum(2).amax(1)).sqrt()
    ev = torch.linalg.eigvalsh(x.transpose(1, 2) @ x).flip(-1).clamp_min(0)
    evc = torch.linalg.eigvalsh(c.transpose(1, 2) @ c)[:, -1]
    res_fro = (cfro2 / fro2).sqrt()
    return dict(res_fro=res_fro, log10_res_fro=torch.log10(res_fro), mu=cfro2.sqrt(),
                res_dong=norm_1inf(c) / norm_1inf(x), stable_rank=fro2 / ev[:, 0],
                gram_stable_rank=ev.pow(2).sum(-1) / ev[:, 0].pow(2),
                stable_rank_centered=cfro2 / evc, sigma_ratio=(ev[:, 1] / ev[:, 0]).sqrt(),
                mean_abs_cos=mean_abs_cos(x))


# --- ours --------------------------------------------------------------------------------------

def run_ours(binary, cfg, precision, threads):
    cmd = [binary, "run", *cli_args(cfg), "--engine", "cpu" if DEVICE == "cpu" else "gpu",
           "--precision", precision, "--threads", str(threads), "--format", "json"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
    doc = json.loads(p.stdout)
    val = lambda v: float(v) if not isinstance(v, str) else float(v.replace("inf", "Infinity"))
    means = [{k: val(m["mean"]) for k, m in layer["metrics"].items()} for layer in doc["layers"]]
    stds = [{k: val(m["std"]) for k, m in layer["metrics"].items()} for layer in doc["layers"]]
    return wall, doc["manifest"]["timings"]["compute_seconds"], means, stds, " ".join(cmd)


def check(ours, stds, peer, sequences, tol):
    worst = {}
    ok = True
    for l, (o, s, p) in enumerate(zip(ours, stds, peer)):
        if not o["log10_res_fro"] > -5:
            continue
        for name, rel in (("log10_res_fro", False), ("stable_rank", True), ("mean_abs_cos", False)):
            pm = float(np.mean(p[name]))
            diff = abs(o[name] - pm) / (abs(o[name]) if rel else 1.0)
            sampling = s[name] / math.sqrt(sequences) / (abs(o[name]) if rel else 1.0)
            if diff > worst.get(name, (-1,))[0]:
                worst[name] = (diff, l, o[name], pm, sampling)
            ok &= diff <= tol
    for name, (diff, l, o, p, sampling) in worst.items():
        kind = "rel" if name == "stable_rank" else "abs"
        print(f"    check {name:14s} worst {kind} diff {diff:.2e} at layer {l} (ours {o:.6g}, "
              f"peer {p:.6g}); sampling error of a mean {sampling:.2e}; tol {tol:.0e}")
    return ok


def main():
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--config", choices=["small", "gpu", "long", "all"], default="small")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each program (median)")
    ap.add_argument("--binary", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"),
                                                     "release", "rankcollapse"))
    ap.add_argument("--precision", choices=["f32", "f64"], default="f32",
                    help="rankcollapse's CPU precision (the GPU engine is f32)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--sequences", type=int, help="override (scale down); the time is extrapolated")
    ap.add_argument("--depth", type=int, help="override (scale down); the time is extrapolated")
    ap.add_argument("--tokens", type=int,
                    help="override n (scale down); the time is extrapolated as n^2 (attention and mean |cos|)")
    ap.add_argument("--full", action="store_true", help="no scaling down on the CPU")
    ap.add_argument("--tol", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=1, choices=[0, 1],
                    help="one untimed run of each program first (0: the check uses the timed runs)")
    a = ap.parse_args()
    DEVICE = a.device
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, device {a.device}, threads {a.threads}, "
          f"rankcollapse {a.binary} (--precision {a.precision}), load {os.getloadavg()}")
    all_ok = True
    names = ["small", "gpu", "long"] if a.config == "all" else [a.config]
    for name in names:
        for full in CONFIGS[name]:
            cfg = dict(full)
            scale = None if (a.full or a.device == "cuda") else CPU_SCALE[name]
            if scale:
                cfg.update(scale)
            if a.sequences:
                cfg["sequences"] = a.sequences
            if a.depth:
                cfg["depth"] = a.depth
            if a.tokens:
                cfg["tokens"] = a.tokens
            factor = (full["sequences"] * full["depth"]) / (cfg["sequences"] * cfg["depth"]) \
                * (full["tokens"] / cfg["tokens"]) ** 2
            print(f"\n== {name}: {describe(cfg)}")
            if factor != 1:
                print(f"   (scaled down from {full['sequences']} sequences x depth {full['depth']} x n {full['tokens']}: "
                      f"times x{factor:g} extrapolate to the full configuration)")
            peer = Peer(cfg, a.device)
            weights, xs = peer.weights(), peer.inputs(0, cfg["sequences"])
            mem = 1 << 30
            per_seq = cfg["heads"] * cfg["tokens"] ** 2 * 4 if peer.window is not None else \
                cfg["tokens"] * cfg["width"] * 4 * 16
            chunk = max(1, min(cfg["sequences"], mem // per_seq))

            def timed_peer():
                if a.device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                res = peer.run(xs, weights, chunk)
                if a.device == "cuda":
                    torch.cuda.synchronize()
                return time.perf_counter() - t0, res

            # Warm-up (untimed) of both, then alternate.
            if a.warmup:
                _, _, ours_means, ours_stds, cmd = run_ours(a.binary, cfg, a.precision, a.threads)
                print(f"   ours: {cmd}")
                _, peer_res = timed_peer()
            t_ours, t_ours_compute, t_peer = [], [], []
            for _ in range(max(a.repeats, 1 - a.warmup)):
                w, c, ours_means, ours_stds, cmd = run_ours(a.binary, cfg, a.precision, a.threads)
                t_ours.append(w)
                t_ours_compute.append(c)
                tp, peer_res = timed_peer()
                t_peer.append(tp)
            if not a.warmup:
                print(f"   ours: {cmd}")
            mo, mc, mp = (statistics.median(t) for t in (t_ours, t_ours_compute, t_peer))
            seq_layers = cfg["sequences"] * cfg["depth"]
            print(f"   load {os.getloadavg()}")
            print(f"   rankcollapse  median {mo:8.3f} s wall ({mc:.3f} s compute)  "
                  f"{seq_layers / mo:10.1f} seq-layers/s   runs {[round(t, 3) for t in t_ours]}")
            print(f"   pytorch       median {mp:8.3f} s              "
                  f"{seq_layers / mp:10.1f} seq-layers/s   runs {[round(t, 3) for t in t_peer]}")
            print(f"   ratio pytorch/rankcollapse = {mp / mo:.3f} (wall), {mp / mc:.3f} (compute);"
                  f" > 1 means rankcollapse is faster")
            if factor != 1:
                print(f"   extrapolated full size: rankcollapse {mo * factor:.1f} s, pytorch {mp * factor:.1f} s")
            ok = check(ours_means, ours_stds, peer_res, cfg["sequences"], a.tol)
            print(f"   CHECK {'passed' if ok else 'FAILED'}: the two programs compute the same statistics")
            all_ok &= ok
    sys.exit(0 if all_ok else 1)


DEVICE = "cpu"
if __name__ == "__main__":
    main()

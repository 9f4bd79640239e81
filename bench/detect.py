"""Detection: throughput of the lens finders on this CPU (64x64 cutouts, 3 bands, batch 256) and their FLOPs.

Target (issue 5): >= 1000 cutouts/s on a 2-core CPU, start-up excluded. Every variant is timed in the same run;
the ratio is against the eager, channels-first model of the same size, measured back to back.

Run: `python bench/detect.py [--batches 8]` (or `make bench`).
"""
import argparse
import os
import time

import numpy as np
import torch

from slnb.detect import FINDER_SIZES, band_noise, count_flops, finder_logits, make_finder
from slnb.surveys import get_survey


def cutouts_per_s(fn, n: int, repeat: int = 3) -> float:
    "Best of `repeat` runs of fn() scoring n cutouts."
    best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    return n / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--batches', type=int, default=8, help='batches of 256 per timing')
    args = ap.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    bands = get_survey('LSST').select('g,r,i')
    sigma = band_noise(bands)
    x = np.random.default_rng(0).normal(0, 1, (256 * args.batches, 3, 64, 64)).astype(np.float32) * sigma.numpy()[:, None, None]
    n = len(x)
    for size in FINDER_SIZES:
        model = make_finder(3, size).eval()
        flops = count_flops(model, (3, 64, 64))
        def eager_cf():
            with torch.inference_mode():
                for i in range(0, n, 256): model(torch.as_tensor(x[i:i + 256]) / sigma[:, None, None])
        eager_cf()
        ref = cutouts_per_s(eager_cf, n)
        finder_logits(model, x[:256], sigma, compile=False)
        cl = cutouts_per_s(lambda: finder_logits(model, x, sigma, compile=False), n)
        t0 = time.perf_counter(); finder_logits(model, x[:512], sigma, compile=True); warm = time.perf_counter() - t0
        comp = cutouts_per_s(lambda: finder_logits(model, x, sigma, compile=True), n)
        print(f"\n{size}: {flops / 1e9:.3f} GFLOP per 64x64x3 cutout, {sum(p.numel() for p in model.parameters()) / 1e3:.0f} k parameters")
        for name, v in (('eager, channels first', ref), ('slnb scoring, channels last', cl),
                        (f'slnb scoring, compiled (first call {warm:.0f} s)', comp)):
            print(f"  {name:44s} {v:7.0f} cutouts/s   x{v / ref:4.2f}   {'>= 1000: met' if v >= 1000 else ''}")


if __name__ == '__main__':
    main()

"""Noise for a batch of cutouts: slnb's vectorised `Band.add_noise` against lenstronomy's per-image
`SingleBand.noise_for_model`, measured in the same run (the ratio is what to read; machines are shared and noisy).

slnb draws real Poisson counts for the whole (N, B, H, W) batch at once; lenstronomy draws a Gaussian
approximation image by image. Run: `make bench` or `python bench/bench_noise.py [N]`.
"""
import sys
import time

import numpy as np
from lenstronomy.SimulationAPI.observation_api import SingleBand

from slnb.surveys import get_survey


def best_of(fn, repeat=3):
    "Best wall time (s) of `repeat` calls."
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return min(times)


def main(n: int = 512, size: int = 64):
    bands = get_survey('LSST').select('g,r,i')
    rng = np.random.default_rng(0)
    model = rng.gamma(0.5, 2.0, (n, len(bands), size, size))      # a batch of noiseless images, electron/s
    singles = [SingleBand(**b.kwargs_single_band()) for b in bands]

    def ours():
        for j, b in enumerate(bands): b.add_noise(model[:, j], rng)

    def reference():
        for j, sb in enumerate(singles):
            for i in range(n): sb.noise_for_model(model[i, j], seed=i)

    t_ours, t_ref = best_of(ours), best_of(reference)
    print(f"noise for {n} x {len(bands)} x {size}x{size}: slnb {t_ours * 1e3:.1f} ms, "
          f"lenstronomy loop {t_ref * 1e3:.1f} ms, speed-up x{t_ref / t_ours:.2f}")


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 512)

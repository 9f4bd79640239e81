"""CUDA: the same code on a GPU gives the CPU's images and lens scores, and how fast it is there.

Checks (issue 4, "same code on CUDA"; issue 5, scoring): slnb's renderer on CUDA (eager and compiled) against the CPU
renderer on the same scenes (relative L2 per image); the same seed gives the same noisy cube twice on the GPU; the
shipped LSST finder's p_lens on CUDA against the CPU's. Speeds: scenes/s and cutouts/s on the GPU, and as a ratio
against this machine's CPU in the same run (the CPU's thread count is printed: compare ratios only between runs
on the same machine kind).

Run: `python bench/gpu.py [--n 8192]` on a machine with a CUDA GPU (it says so and stops where there is none).
"""
import argparse
import os
import time

import numpy as np
import torch

from slnb.detect import find_finder, lens_probability, load_finder
from slnb.render import Renderer, relative_l2, use_compiled_kernel
from slnb.simulate import Distances, PopulationConfig, simulate_cube, simulate_population
from slnb.surveys import get_survey

DEVICE = 'cuda'


def timed(fn, sync: bool, repeat: int = 3) -> float:
    "Best wall time (s) of `repeat` calls of fn(), synchronising the GPU around each."
    best = float('inf')
    for _ in range(repeat):
        if sync and DEVICE == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter(); fn()
        if sync and DEVICE == 'cuda': torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def check_renderer(scenes, bands, n_check: int) -> None:
    "Relative L2 of CUDA images against the CPU's, and scenes/s on each, for the supersampling modes slnb offers."
    print(f"\n== renderer: LSST g,r,i 64x64, {len(scenes)} scenes timed, {n_check} compared with the CPU")
    for ss, refine in ((1, 1.0), (3, 1.0), (3, 0.25)):
        use_compiled_kernel(False)
        ref = Renderer(bands, 64, ss, refine, device='cpu').noiseless(scenes[:n_check]).numpy()
        cpu = Renderer(bands, 64, ss, refine, device='cpu')
        t_cpu = timed(lambda: cpu.noiseless(scenes[:n_check]), False, 2) / n_check
        for compiled in (False, True):
            use_compiled_kernel(compiled)
            gpu = Renderer(bands, 64, ss, refine, device=DEVICE)
            img = gpu.noiseless(scenes[:n_check]).cpu().numpy()
            err = relative_l2(img, ref)
            t = timed(lambda: gpu.noiseless(scenes), True) / len(scenes)
            print(f"  ss={ss} {'full' if refine >= 1 else f'adaptive {refine:.0%}':14s} {'compiled' if compiled else 'eager':8s} "
                  f"vs CPU: median rel. L2 {np.median(err):.1e}, max {err.max():.1e}   "
                  f"{1e3 * t:7.4f} ms/scene ({1 / t:9.0f} scenes/s), x{t_cpu / t:6.1f} this CPU ({1e3 * t_cpu:.3f} ms)")
        use_compiled_kernel(False)


def check_cube(n: int) -> None:
    "Time a whole noisy cube (population, render, noise) on the GPU; the same seed twice gives the same pixels."
    print(f"\n== slnb simulate on CUDA: {n} LSST g,r,i cutouts, seed 5")
    t0 = time.perf_counter(); a = simulate_cube(n, 'LSST', 'g,r,i', 0.5, 5, device=DEVICE, show_progress=False)
    t1 = time.perf_counter(); b = simulate_cube(n, 'LSST', 'g,r,i', 0.5, 5, device=DEVICE, show_progress=False)
    t2 = time.perf_counter()
    same = np.array_equal(a.images, b.images)
    print(f"  {n / (t1 - t0):.0f} then {n / (t2 - t1):.0f} cutouts/s (population drawn on the CPU); same seed, same "
          f"pixels: {same}")
    if not same: print(f"  max |difference| {np.abs(a.images - b.images).max():.3e}")
    return a


def check_finder(cube, n_time: int) -> None:
    "p_lens on CUDA against the CPU's for the shipped LSST finder, and cutouts/s on each."
    print(f"\n== shipped LSST g,r,i finder: {len(cube.images)} cutouts compared, {n_time} timed")
    folder = find_finder('LSST', 'g,r,i')
    m_cpu, card = load_finder(folder, 'cpu')
    p_cpu = lens_probability(m_cpu, card, cube.images, device='cpu', compile=False)
    k = min(1024, len(cube.images))
    t_cpu = timed(lambda: lens_probability(m_cpu, card, cube.images[:k], device='cpu', compile=False), False, 2) / k
    m_gpu, _ = load_finder(folder, DEVICE)
    p_gpu = lens_probability(m_gpu, card, cube.images, device=DEVICE, compile=False)
    print(f"  max |p_lens CUDA - p_lens CPU| = {np.abs(p_gpu - p_cpu).max():.2e}")
    x = np.tile(cube.images, (int(np.ceil(n_time / len(cube.images))), 1, 1, 1))[:n_time]
    for compiled, batch in ((False, 256), (False, 2048), (True, 2048)):
        lens_probability(m_gpu, card, x[:2 * batch], batch=batch, device=DEVICE, compile=compiled)
        t = timed(lambda: lens_probability(m_gpu, card, x, batch=batch, device=DEVICE, compile=compiled), True) / n_time
        print(f"  {'compiled' if compiled else 'eager':8s} batch {batch:5d}: {1 / t:9.0f} cutouts/s, "
              f"x{t_cpu / t:6.1f} this CPU ({1 / t_cpu:.0f} cutouts/s, eager)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=8192, help='scenes rendered per GPU timing')
    ap.add_argument('--n-check', type=int, default=256, help='scenes compared with the CPU (and timed there)')
    ap.add_argument('--n-cube', type=int, default=4096, help='cutouts in the simulate_cube check')
    ap.add_argument('--n-score', type=int, default=32768, help='cutouts per finder timing')
    ap.add_argument('--device', default='cuda', help="the device checked against the CPU ('cpu' tries the script here)")
    args = ap.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('bench/gpu.py: no CUDA device here; nothing to check'); return
    global DEVICE; DEVICE = args.device
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if DEVICE == 'cuda' else DEVICE}, CPU: {torch.get_num_threads()} threads of "
          f"{os.cpu_count()}")
    bands = get_survey('LSST').select('g,r,i')
    scenes, _ = simulate_population(args.n, bands, 1.0, np.random.default_rng(1),
                                    PopulationConfig(source='sersic', neighbour_probability=0.0), Distances())
    check_renderer(scenes, bands, args.n_check)
    cube = check_cube(args.n_cube)
    check_finder(cube, args.n_score)


if __name__ == '__main__':
    main()

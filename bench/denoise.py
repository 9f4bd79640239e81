"""Denoising: PSNR gain and arc flux of the shipped LSST denoiser and the baselines, on lenses made by lenstronomy.

Targets (issue 6): median PSNR gain >= 6 dB over the noisy input against the noiseless image (PSNR with the clean
image's peak; the best Gaussian smoothing gains about 1.4 dB), arc flux preserved within 5%. The lenses (arc S/N
>= 10, every pixel by lenstronomy: `slnb.reference.reference_lenses`) are made once and kept in bench/out/.

Run: `python bench/denoise.py [--n 1000] [--seed 11]` (or `make bench`).
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from slnb.denoise import (arc_flux_ratio, denoise_images, find_denoiser, gaussian_baseline, load_denoiser,
                          nlm_baseline, psnr, wavelet_baseline)
from slnb.reference import reference_lenses

OUT = Path(__file__).parent / 'out'


def lenses(n: int, seed: int):
    "noisy, clean, arcs (N, 3, 64, 64) and arc S/N of n lenstronomy-made LSST g,r,i lenses, cached in bench/out/."
    f = OUT / f'denoise_lenses_n{n}_seed{seed}.npz'
    if f.is_file():
        d = np.load(f); return d['noisy'], d['clean'], d['arcs'], d['arc_snr']
    t0 = time.perf_counter()
    noisy, clean, arcs, cat = reference_lenses(n, 'LSST', 'g,r,i', seed)
    OUT.mkdir(exist_ok=True)
    tmp = f.with_suffix('.tmp.npz')
    np.savez_compressed(tmp, noisy=noisy, clean=clean, arcs=arcs, arc_snr=np.asarray(cat['arc_snr']))
    os.replace(tmp, f)
    print(f"made {n} lenses with lenstronomy in {time.perf_counter() - t0:.0f} s -> {f}")
    return noisy, clean, arcs, np.asarray(cat['arc_snr'])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=1000, help='lenstronomy-made lenses')
    ap.add_argument('--seed', type=int, default=11)
    ap.add_argument('--weights', default=None, help="a denoiser's weights folder (default: the shipped LSST g,r,i one)")
    args = ap.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    noisy, clean, arcs, snr = lenses(args.n, args.seed)
    folder = Path(args.weights) if args.weights else find_denoiser('LSST', 'g,r,i')
    model, card = load_denoiser(folder)
    sigma = np.array(card['noise_sigma'])
    base = psnr(noisy, clean)

    widths = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    gains = [np.median(psnr(gaussian_baseline(noisy[:200], w), clean[:200]) - base[:200]) for w in widths]
    best = widths[int(np.argmax(gains))]
    methods = {f'Gaussian, best sigma = {best} pix': lambda x: gaussian_baseline(x, best),
               'wavelet (BayesShrink)': lambda x: wavelet_baseline(x, sigma),
               'non-local means': lambda x: nlm_baseline(x, sigma),
               f'U-Net ({folder.name})': lambda x: denoise_images(model, card, x)}
    print(f"\n== {len(noisy)} LSST g,r,i lenses made by lenstronomy (arc S/N {snr.min():.0f}-{snr.max():.0f}, median "
          f"{np.median(snr):.0f}); per cutout and band: PSNR gain over the noisy input, recovered/true arc flux "
          f"where the arcs exceed 1 sigma")
    print(f"  {'method':40s} {'PSNR gain dB':>13s} {'(16-84%)':>12s} {'arc flux':>9s} {'|err|<5%':>9s} {'ms/cutout':>10s}")
    for name, fn in methods.items():
        t0 = time.perf_counter(); est = fn(noisy); dt = (time.perf_counter() - t0) / len(noisy) * 1e3
        g = psnr(est, clean) - base
        r = arc_flux_ratio(est, clean, arcs, sigma)
        ok = np.isfinite(r)
        print(f"  {name:40s} {np.median(g):13.2f} {np.percentile(g, 16):6.1f}-{np.percentile(g, 84):<5.1f} "
              f"{np.median(r[ok]):9.3f} {np.mean(np.abs(r[ok] - 1) < 0.05):9.2f} {dt:10.2f}")
    r = arc_flux_ratio(noisy, clean, arcs, sigma)
    print(f"  {'(noisy input itself)':40s} {0:13.2f} {'':12s} {np.median(r[np.isfinite(r)]):9.3f}")
    print("targets: median PSNR gain >= 6 dB; arc flux within 5% (median ratio in [0.95, 1.05])")


if __name__ == '__main__':
    main()

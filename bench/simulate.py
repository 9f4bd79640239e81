"""Simulation: fidelity of slnb's renderer against lenstronomy re-rendering the truth catalogue, and per-scene speed
against lenstronomy (and caustics, if installed) rendering the same scenes at the same supersampling, in one run.

Targets (issue 4): median relative L2 <= 0.5 % and 99th percentile <= 2 % on 2000 LSST g,r,i scenes; >= 30x
lenstronomy per 3-band 64x64 scene at equal supersampling on a 2-core CPU. Ratios are what to read: the machines
are shared and noisy, so every reference is measured in the same run.

Run: `python bench/simulate.py [--n 2000] [--n-speed 1024] [--no-compile]` (or `make bench`).
"""
import argparse
import os
import time

import numpy as np
import torch

from slnb.render import (Renderer, _lenstronomy_models, gaussian_filter_kernel, lenstronomy_kwargs, relative_l2,
                         use_compiled_kernel)
from slnb.simulate import Distances, PopulationConfig, rerender_with_lenstronomy, simulate_cube, simulate_population
from slnb.surveys import FWHM_TO_SIGMA, get_survey


def fidelity(n: int, supersample: int, refine: float, seed: int = 0) -> np.ndarray:
    "Relative L2 (n, 3) of slnb's noiseless LSST g,r,i lenses against lenstronomy re-rendering the truth catalogue."
    cube = simulate_cube(n, 'LSST', 'g,r,i', 1.0, seed, supersample=supersample, refine_fraction=refine,
                         source='sersic', noiseless=True, device='cpu', show_progress=False)
    return relative_l2(cube.images, rerender_with_lenstronomy(cube))


def per_scene_ms(fn, n_scenes: int, repeat: int = 3) -> float:
    "Best of `repeat` wall times of fn(), in ms per scene."
    best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    return best / n_scenes * 1e3


def lenstronomy_ms(scenes, bands, supersample: int, n: int) -> float:
    "lenstronomy's time per 3-band scene (models built once, as a careful user would), over the first n scenes."
    models = [_lenstronomy_models(b, 64, supersample, False, 1, 1) for b in bands]
    kws = [[lenstronomy_kwargs(scenes, i, j) for j in range(len(bands))] for i in range(n)]
    def run():
        for i in range(n):
            for j, m in enumerate(models): m.image(*kws[i][j])
    return per_scene_ms(run, n, repeat=2)


def lenstronomy_adaptive_ms(scenes, bands, n: int, refine: float = 0.25) -> float:
    "lenstronomy's time per 3-band scene in its own adaptive mode, supersampling (x3) the same pixels slnb picks."
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    from lenstronomy.SimulationAPI.data_api import DataAPI
    from slnb.render import _laplacian_score, surface_brightness_grid
    sc = scenes[:n].to('cpu')
    score = _laplacian_score(surface_brightness_grid(sc, 64, bands[0].pixel_scale))
    idx = torch.topk(score, int(round(refine * 64 * 64)), dim=1).indices
    models, kws = [], []
    for i in range(n):
        mask = np.zeros(64 * 64, bool); mask[idx[i].numpy()] = True
        for j, b in enumerate(bands):               # GAUSSIAN cannot be adaptive in lenstronomy: the same kernel as PIXEL
            data = DataAPI(64, **b.kwargs_single_band()).data_class
            k = gaussian_filter_kernel(b.psf_fwhm * FWHM_TO_SIGMA / b.pixel_scale)
            psf = PSF(psf_type='PIXEL', kernel_point_source=np.outer(k, k))
            models.append(ImageModel(data, psf, LensModel(['SIE', 'SHEAR']), LightModel(['SERSIC_ELLIPSE']),
                                     LightModel(['SERSIC_ELLIPSE']), kwargs_numerics={
                                         'supersampling_factor': 3, 'compute_mode': 'adaptive',
                                         'supersampled_indexes': mask.reshape(64, 64)}))
            kws.append(lenstronomy_kwargs(scenes, i, j))
    def run():
        for m, kw in zip(models, kws): m.image(*kw)
    return per_scene_ms(run, n, repeat=2)


def caustics_ms(scenes, bands, supersample: int, n: int) -> float | None:
    "caustics' time per 3-band scene (LensSource vmapped over scenes x bands), or None if it is not installed."
    try:
        import caustics
    except ImportError:
        return None
    cosmo = caustics.FlatLambdaCDM(name='cosmo')
    sie = caustics.SIE(cosmology=cosmo, name='sie', z_l=0.5, z_s=1.5)
    shear = caustics.ExternalShear(cosmology=cosmo, name='shear', z_l=0.5, z_s=1.5, x0=0.0, y0=0.0)
    lens = caustics.SinglePlane(lenses=[sie, shear], cosmology=cosmo, name='lens', z_l=0.5, z_s=1.5)
    src, ll = caustics.Sersic(name='src'), caustics.Sersic(name='ll')
    k = gaussian_filter_kernel(bands[1].psf_fwhm * FWHM_TO_SIGMA / bands[1].pixel_scale * supersample)
    sim = caustics.LensSource(lens, src, pixelscale=bands[1].pixel_scale, pixels_x=64, lens_light=ll,
                              upsample_factor=supersample, psf=torch.tensor(np.outer(k, k), dtype=torch.float32),
                              psf_mode='fft', name='sim')
    for mod in (sie, src, ll): mod.to_dynamic()
    shear.gamma_1.to_dynamic(); shear.gamma_2.to_dynamic()
    m, L = scenes.mass, scenes.light
    rows = []
    for i in range(n):
        q_m, phi_m = _q_phi(m['e1'][i], m['e2'][i])
        comp = lambda c: [L['center_x'][i, c], L['center_y'][i, c], *_q_phi(L['e1'][i, c], L['e2'][i, c]),
                          L['n_sersic'][i, c], L['R_sersic'][i, c], 1.0]
        for _ in bands:
            rows.append([m['center_x'][i], m['center_y'][i], q_m, phi_m, m['theta_E'][i], m['gamma1'][i], m['gamma2'][i]]
                        + comp(1) + comp(0))
    P = torch.tensor(np.array(rows, dtype=np.float32))
    f = torch.vmap(sim)
    f(P[:3])
    return per_scene_ms(lambda: f(P), n, repeat=2)


def _q_phi(e1, e2):
    c = float(np.hypot(float(e1), float(e2)))
    return (1 - c) / (1 + c), 0.5 * float(np.arctan2(float(e2), float(e1)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=2000, help='scenes for the fidelity test')
    ap.add_argument('--n-speed', type=int, default=1024, help='scenes slnb renders for the timing')
    ap.add_argument('--n-lenstronomy', type=int, default=60, help='scenes lenstronomy renders for each timing')
    ap.add_argument('--pairs', type=int, default=3, help='back-to-back timing pairs per variant (the ratio is their median)')
    ap.add_argument('--skip-fidelity', action='store_true')
    ap.add_argument('--ss', default='1,3', help='supersampling factors to time, comma-separated')
    ap.add_argument('--no-compile', action='store_true', help='skip the torch.compile variant')
    args = ap.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    print(f"\n== fidelity: {args.n} LSST g,r,i lenses (SIE + shear, Sersic lens light and source), supersampling 3")
    for refine, label in (() if args.skip_fidelity else ((1.0, 'full supersampling'), (0.25, 'adaptive (25 % of pixels)'))):
        t0 = time.perf_counter(); err = fidelity(args.n, 3, refine)
        print(f"  {label:28s} relative L2: median {np.median(err):.2e}, 99th pct {np.percentile(err, 99):.2e}, "
              f"max {err.max():.2e}   (targets 5e-3, 2e-2; {time.perf_counter() - t0:.0f} s)")

    bands = get_survey('LSST').select('g,r,i')
    scenes, _ = simulate_population(args.n_speed, bands, 1.0, np.random.default_rng(1),
                                    PopulationConfig(source='sersic', neighbour_probability=0.0), Distances())
    print(f"\n== speed: ms per 3-band 64x64 scene (slnb on {args.n_speed} scenes, lenstronomy on {args.n_lenstronomy}); "
          f"each ratio is the median of {args.pairs} back-to-back pairs (slnb, lenstronomy)")
    rows = []
    for ss in (int(v) for v in args.ss.split(',')):
        variants = [('full', 1.0)] + ([('adaptive 25%', 0.25)] if ss > 1 else [])
        refs = []
        for compiled in ([False] if args.no_compile else [False, True]):
            if compiled and not use_compiled_kernel(True): print('  (torch.compile unavailable)'); continue
            for name, refine in variants:
                r = Renderer(bands, 64, ss, refine, device='cpu')
                t0 = time.perf_counter(); r.noiseless(scenes[:256]); warm = time.perf_counter() - t0
                pairs = []
                for _ in range(args.pairs):
                    ours = per_scene_ms(lambda: r.noiseless(scenes), args.n_speed, repeat=2)
                    ref = lenstronomy_ms(scenes, bands, ss, args.n_lenstronomy)
                    pairs.append((ours, ref)); refs.append(ref)
                ours, ref = np.median([p[0] for p in pairs]), np.median([p[1] for p in pairs])
                ratio = np.median([p[1] / p[0] for p in pairs])
                rows.append((f"slnb ss={ss} {name}{' compiled' if compiled else ''}", ours, ratio)
                            + ((f'first call {warm:.1f} s',) if compiled else ()))
            use_compiled_kernel(False)
        rows.insert(len(rows) - len(variants) * (1 if args.no_compile else 2), (f'lenstronomy ss={ss}', float(np.median(refs)), 1.0))
        if ss == 3:
            la = lenstronomy_adaptive_ms(scenes, bands, min(40, args.n_lenstronomy))
            ours = [r for r in rows if r[0] == 'slnb ss=3 adaptive 25%'][0][1]
            rows.append(('lenstronomy ss=3 adaptive, same pixels', la, la / ours, 'ratio: it over slnb adaptive'))
        c = caustics_ms(scenes, bands, ss, min(48, args.n_lenstronomy))
        ref = lenstronomy_ms(scenes, bands, ss, args.n_lenstronomy)
        rows.append((f'caustics ss={ss}', c, ref / c) if c else (f'caustics ss={ss}', float('nan'), float('nan'), 'not installed'))
    for r in rows:
        print(f"  {r[0]:36s} {r[1]:8.3f} ms   x{r[2]:7.1f} vs lenstronomy" + (f"   ({r[3]})" if len(r) > 3 else ''))


if __name__ == '__main__':
    main()

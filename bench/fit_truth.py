"""How well the fitted model can describe bench/fit.py's lenses at all (issue 8): chi^2 per pixel at their truth (the
true lens, lens light, neighbours and source, its clumps as Gaussians of their true widths; the amplitudes solved as
in a fit; chi^2 alone, without the clumps' repulsion prior), for each way of rendering the model (`CONFIGS`): with and
without the PSF margin (`FitModel.psf_margin`) and the lens light's finer core (`FitModel.core_supersample`); the
source's Gaussians averaged over the sub-pixels' footprints (`footprint`); that with 3x3 sub-pixels and the source's
cusp guarded (`fine`); and the clumps held at the fit's CLUMP_SIGMA instead of their true widths (`fixed_widths`,
otherwise as the defaults). A model that is right gives ~1.
`--data-supersample A,B`: the sub-pixels per pixel with which lenstronomy made the data (everything, the lens light);
8,8 by default, 3,8 before 2026-12-06 (3x3 points are not a pixel's mean for the simulated 0.02-0.06" clumps).
Run: `python bench/fit_truth.py [--n 8] [--seed 7] [--data-supersample 8,8]`; writes bench/out/fit_truth.json.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from slnb.fit import BatchedLikelihood, FitModel, LensLikelihood, crop_size
from slnb.io import make_cube
from slnb.reference import _survey_bands, lenstronomy_terms, reference_lenses
from slnb.simulate import Distances, PopulationConfig, simulate_population
from slnb.core import as_rng, atomic_write
from slnb.surveys import get_survey

CONFIGS = {'neither': dict(psf_margin=0.0, core_supersample=None), 'margin': dict(psf_margin=3.0, core_supersample=None),
           'core': dict(psf_margin=0.0, core_supersample=8), 'both': dict(psf_margin=3.0, core_supersample=8),
           'footprint': dict(psf_margin=3.0, core_supersample=8, footprint=True),
           'fine': dict(psf_margin=3.0, core_supersample=8, footprint=True, source_cusp=True, supersample=3),
           'fixed_widths': dict(psf_margin=3.0, core_supersample=8, clump_widths=False)}   # FitModel keywords


def truth_terms(n: int, seed: int, cat) -> list[dict]:
    "The lenstronomy keyword lists of each bench lens, from the first population reference_lenses draws (matched by theta_E)."
    _, bb = _survey_bands('LSST', 'g,r,i')
    rng = as_rng(np.random.SeedSequence([seed, 31337]))
    scenes, pop = simulate_population(int(1.3 * n) + 20, bb, 1.0, rng, PopulationConfig(real_source_fraction=0.0),
                                      Distances(), 64 * bb[0].pixel_scale / 2)
    out = []
    for te in cat['theta_E']:
        k = int(np.argmin(np.abs(np.asarray(pop['theta_E']) - te)))
        if abs(pop['theta_E'][k] - te) > 1e-6: raise RuntimeError(f"lens of theta_E {te} not in the first draw")
        out.append(lenstronomy_terms(scenes, k, 1))
    return out


def as_start(t: dict) -> tuple[dict, dict, int]:
    "The truth as a start-like dict, the same with the shear's origin at 0 (the simulation's), and its clump count."
    lens = [dict(t['kwargs_lens'][0]), {k: t['kwargs_lens'][1][k] for k in ('gamma1', 'gamma2')}]
    src = [{k: v for k, v in t['kwargs_source'][0].items() if k != 'amp'}]
    clumps = [dict(sigma=d['R_sersic'] / np.sqrt(2 * np.log(2)), center_x=d['center_x'], center_y=d['center_y'])
              for d in t['kwargs_source'][1:]]                      # a Sérsic of n = 0.5 is a Gaussian
    light = [{k: v for k, v in d.items() if k != 'amp'} for d in t['kwargs_lens_light']]
    truth = dict(lens=lens, source=src + clumps, lens_light=light)
    origin = dict(truth, lens=[dict(lens[0], center_x=0.0, center_y=0.0), lens[1]])   # the fit's shear origin: its start's centre
    return truth, origin, len(clumps)


def reference_data(n: int, seed: int, supersample: tuple = (8, 8)):
    "bench/fit.py's n lenses: noisy images (N, B, H, W) made by lenstronomy at `supersample`, and the catalogue."
    noisy, _, _, cat = reference_lenses(n, 'LSST', 'g,r,i', seed, supersample=supersample, min_arc_snr=20, show_progress=False)
    return noisy, cat


def chi2_pixel(lk: LensLikelihood, args) -> float:
    "chi^2 per unmasked pixel of the vector `args`, amplitudes solved (no prior)."
    bl = BatchedLikelihood(lk)
    m = bl.model(args)['model']
    d, w = (a.cpu().numpy().reshape(m.shape) for a in (bl.data, bl.weight))
    return float(((d - m) ** 2 * w).sum() / lk.n_data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=8); ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--data-supersample', default='8,8', help='lenstronomy sub-pixels per pixel: everything, the lens light')
    args = ap.parse_args()
    noisy, cat = reference_data(args.n, args.seed, tuple(int(a) for a in args.data_supersample.split(',')))
    cube = make_cube(noisy, 'LSST', 'g,r,i', catalog=cat)
    cube.header = {f'PSF_{b.name.upper()}': b.psf_fwhm for b in get_survey('LSST').select('g,r,i')}
    rows = []
    for i, t in enumerate(truth_terms(args.n, args.seed, cat)):
        truth, origin, n_clumps = as_start(t)
        crop = crop_size(cube, truth['lens'][0]['theta_E'])
        row = dict(id=i, theta_E=float(cat['theta_E'][i]), crop=crop, clumps=n_clumps, neighbours=len(truth['lens_light']) - 1,
                   lens_light_n=float(truth['lens_light'][0]['n_sersic']), lens_light_R=float(truth['lens_light'][0]['R_sersic']))
        for name, kw in CONFIGS.items():
            lk = LensLikelihood(cube, i, origin, FitModel(crop=crop, clumps=n_clumps, neighbours=row['neighbours'],
                                                          fix_neighbours=True, **(dict(clump_widths=True) | kw)))
            row[name] = chi2_pixel(lk, lk.args(truth))
        rows.append(row)
        print(f"lens {i}: theta_E {row['theta_E']:.2f}\", lens light n {row['lens_light_n']:.1f}, R {row['lens_light_R']:.2f}\"; "
              "chi2/pixel at the truth: " + ', '.join(f"{k} {row[k]:.3f}" for k in CONFIGS), flush=True)
    summary = {k: dict(median=float(np.median([r[k] for r in rows])), max=float(np.max([r[k] for r in rows]))) for k in CONFIGS}
    print('median (max):', ', '.join(f"{k} {v['median']:.3f} ({v['max']:.2f})" for k, v in summary.items()))
    out = Path(__file__).parent / 'out' / 'fit_truth.json'
    out.parent.mkdir(exist_ok=True)
    with atomic_write(out) as f: f.write(json.dumps(dict(data_supersample=args.data_supersample, summary=summary, rows=rows), indent=1))


if __name__ == '__main__':
    main()

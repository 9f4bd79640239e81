"""MCMC lens modelling (issue 8): accuracy, convergence and wall time of `slnb.fit.fit_lens` on lenstronomy-made LSST
g,r,i lenses (arc S/N >= 20, every pixel by lenstronomy: `slnb.reference.reference_lenses`, at 8x8 sub-pixels per
pixel (`--data-supersample 8,8`): at 3x3 a bright lens light's core is off by up to ~100 sigma, and the simulated
sources' 0.02-0.06" clumps by up to chi^2 ~20 per pixel; until 2026-12-06 the runs used 3,8), started from the shipped
CNN's prediction (on the shipped deblender's ARCS) and, for the first `--blind` of them, blind; and the time of one
likelihood call for the whole ensemble, batched in torch against lenstronomy walker by walker.
Targets: theta_E within 2% (median), converged chains; from the CNN >= 5x less wall time than blind at the same
accuracy; median wall time per lens from the CNN <= 60 s on this 2-core CPU.
Run: `python bench/fit.py [--n 8] [--ids 2,5] [--blind 3] [--max-steps N (default: the sampler's)] [--seed 7] [--starts cnn,blind]
[--out fit] [--core K (default: FitConfig's, 8; 0: off)] [--psf-margin S (default: FitConfig's, 3; 0: off)] [--coarse-margin 0|1] [--cusp 0|1 (default: FitConfig's source_cusp)] [--source-core C (sub-pixels; default: FitConfig's, 0.2; 0: off)]
[--ellipticity-sigma S] [--shear-sigma S] (default: FitConfig's structure priors; 0: off) [--leapfrog L] [--leapfrog-long L] [--lengthen-ratio R] [--lengthen-growth G] [--long-extend X] [--long-steps N] [--metric M] [--step-jitter 0.125,1.2] [--small-steps P,F] [--retry A]
(default: the sampler's) [--dtype float32|float64 (default: FitConfig.sample_dtype)] [--clump-min-gain G] [--cnn-offsets 0,-1,1] [--polish-best K] [--compile 0|1] [--supersample K] (default: FitConfig's) [--truth-check 0|1|2] [--mode-only 0|1] [--data-supersample 8,8] [--clump-sigma S (default: slnb.fit.CLUMP_SIGMA)] [--search-rounds 1|2]`; writes bench/out/<out>.json (`--starts blind`: only the blind fits of the first `--blind` lenses).
"""
import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import slnb.fit
from slnb.core import PARAM_NAMES, atomic_write
from slnb.deblend import deblend_images, find_deblender, load_deblender
from slnb.fit import (BatchedLikelihood, FitConfig, FitModel, LensLikelihood, SamplerConfig, _graph_count, _sigma_known, cnn_start, crop_size,
                      find_mode, fit_lens, fit_mode, fit_row)
from slnb.io import make_cube
from slnb.predict import find_predictor, load_predictor, predict_parameters, prediction_table
from slnb.surveys import get_survey
from fit_truth import as_start, chi2_pixel, reference_data, truth_terms


OUT = Path(__file__).parent / 'out'


def reference_cube(n: int, seed: int, supersample: tuple = (8, 8)):
    "n lenstronomy-made LSST g,r,i lenses as a cube with PSF_<BAND>, the deblender's LENS_LIGHT and ARCS, and the CNN's\
 prediction table."
    noisy, cat = reference_data(n, seed, supersample)
    light, arcs = deblend_images(*load_deblender(find_deblender('LSST', 'g,r,i')), noisy)
    cube = make_cube(noisy, 'LSST', 'g,r,i', catalog=cat, lens_light=light, arcs=arcs)
    cube.header = {f'PSF_{b.name.upper()}': b.psf_fwhm for b in get_survey('LSST').select('g,r,i')}
    model, card = load_predictor(find_predictor('LSST', 'g,r,i'))
    return cube, prediction_table(cat['id'], predict_parameters(model, card, noisy, arcs=arcs))


def likelihood_speed(cube, pred, walkers: int = 48) -> dict:
    "Seconds for one log L of `walkers` walkers: batched in torch, and lenstronomy one by one."
    start, _ = cnn_start(cube, 0, pred[0])
    lk = LensLikelihood(cube, 0, start, FitModel(crop=crop_size(cube, start['lens'][0]['theta_E']), clumps=3))
    x = lk.args(start) + 1e-3 * np.random.default_rng(0).standard_normal((walkers, lk.ndim))
    bl = BatchedLikelihood(lk); bl(x)
    t = time.perf_counter(); bl(x); tb = time.perf_counter() - t
    t = time.perf_counter(); [lk.log_likelihood(p) for p in x]; tl = time.perf_counter() - t
    bl.value_and_grad(x[:16])
    t = time.perf_counter(); bl(x[:16]); t16 = time.perf_counter() - t
    t = time.perf_counter(); bl.value_and_grad(x[:16]); tg = time.perf_counter() - t
    b32 = BatchedLikelihood(lk, dtype=torch.float32); b32.value_and_grad(x[:8]); bl.value_and_grad(x[:8])
    c32 = BatchedLikelihood(lk, dtype=torch.float32, compiled=True)
    t_compile = _seconds(lambda: c32.value_and_grad(x[:8]))   # the first call compiles (unless its graph is cached on disk)
    t8 = {}
    for name, b in (('float64', bl), ('float32', b32), ('float32_compiled', c32)):   # the sampler's call: 8 walkers, best of 3 x 10
        t8[name] = min(_seconds(lambda: [b.value_and_grad(x[:8]) for _ in range(10)]) / 10 for _ in range(3))
    full = BatchedLikelihood(LensLikelihood(cube, 0, start, replace(lk.model, coarse_margin=False)), dtype=torch.float32, compiled=True)
    full.value_and_grad(x[:8])                                  # the PSF margin supersampled like the fitted square
    t8['full_margin'] = min(_seconds(lambda: [full.value_and_grad(x[:8]) for _ in range(10)]) / 10 for _ in range(3))
    c64 = BatchedLikelihood(lk, compiled=True, batch=1); c64.value_and_grad(x[:1])   # the polish's call: one walker, float64
    t1 = {name: min(_seconds(lambda: [b.value_and_grad(x[:1]) for _ in range(10)]) / 10 for _ in range(3))
          for name, b in (('eager', bl), ('compiled', c64))}
    two32, two64 = (autograd_over_compiled(BatchedLikelihood(lk, dtype=d, compiled=True, batch=n))
                    for d, n in ((torch.float32, 8), (torch.float64, 1)))
    t_compile_two = _seconds(lambda: two32.value_and_grad(x[:8])); two64.value_and_grad(x[:1])
    fused = dict(fused_gain=paired_ratio(lambda: two32.value_and_grad(x[:8]), lambda: c32.value_and_grad(x[:8])),
                 fused_gain_polish=paired_ratio(lambda: two64.value_and_grad(x[:1]), lambda: c64.value_and_grad(x[:1])),
                 compile_two_graphs_s=t_compile_two)
    return dict(walkers=walkers, crop=lk.model.crop, batched_s=tb, lenstronomy_s=tl, ratio=tl / tb,
                value_and_grad_1_float64_s=t1['eager'], value_and_grad_1_float64_compiled_s=t1['compiled'],
                polish_eager_over_compiled=t1['eager'] / t1['compiled'],
                log_l_16_s=t16, value_and_grad_16_s=tg, value_and_grad_8_float64_s=t8['float64'],
                value_and_grad_8_float32_s=t8['float32'], float64_over_float32=t8['float64'] / t8['float32'],
                value_and_grad_8_compiled_s=t8['float32_compiled'], compile_s=t_compile, compiled=c32.compiled,
                value_and_grad_8_compiled_full_margin_s=t8['full_margin'], coarse_margin_gain=t8['full_margin'] / t8['float32_compiled'],
                eager_over_compiled=t8['float32'] / t8['float32_compiled'], **fused)


def autograd_over_compiled(bl: BatchedLikelihood) -> BatchedLikelihood:
    "bl with its gradient as before 2026-12-07, the reference for the fused graph (`_log_prob_and_grad`): autograd over\
 a compiled log L, two graphs (forward, backward)."
    graph = torch.compile(BatchedLikelihood._log_prob, dynamic=False)
    bl._compiled_grad = lambda p: BatchedLikelihood._grad(lambda q: graph(bl, q), p.clone().requires_grad_(True))
    return bl


def paired_ratio(reference, candidate, calls: int = 20, rounds: int = 20) -> float:
    "How many times faster `candidate` runs than `reference`: the median over `rounds` of the ratio of their times for\
 `calls` calls each, run back to back (a shared machine's drifts cancel in each pair)."
    pairs = [[_seconds(lambda: [f() for _ in range(calls)]) for f in (reference, candidate)] for _ in range(rounds)]
    return float(np.median([a / b for a, b in pairs]))


def truth_check(cube, i: int, lk, chi2_fit: float, terms: dict, pred_row, cfg: FitConfig, oracle: bool) -> dict:
    "Where the fit's error comes from: chi^2/pixel of the truth (its own components) on the fit's pixels, and with\
 `oracle` the mode `find_mode` reaches from a perfect CNN (the true lens, the CNN's sigmas): its theta_E and chi^2."
    truth, origin, n_clumps = as_start(terms)
    model = replace(lk.model, clumps=n_clumps, clump_widths=True, neighbours=len(truth['lens_light']) - 1,
                    fix_neighbours=True, shapelets=None)
    tlk = LensLikelihood(cube, i, origin, model)
    chi2_truth = chi2_pixel(tlk, tlk.args(truth))
    out = dict(chi2_truth=chi2_truth, delta_chi2_truth=(chi2_fit - chi2_truth) * lk.n_data)
    if not oracle: return out
    perfect = {p: float(cube.catalog[p][i]) for p in PARAM_NAMES} | {f'{p}_std': float(pred_row[f'{p}_std']) for p in PARAM_NAMES}
    start = _sigma_known(*cnn_start(cube, i, perfect, cfg.mass))
    olk, of, ox = find_mode(cube, i, *start, cfg, np.random.default_rng([cfg.sampler.seed, i]), lk.model.crop)
    chi2_oracle = chi2_pixel(olk, ox)
    return out | dict(chi2_oracle=chi2_oracle, oracle_theta_E=float(olk.kwargs(ox)['lens'][0]['theta_E']),
                      delta_chi2_oracle=(chi2_fit - chi2_oracle) * lk.n_data)


def _seconds(f) -> float:
    t = time.perf_counter(); f(); return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=8); ap.add_argument('--blind', type=int, default=3)
    ap.add_argument('--ids', default='', help='only these of the n lenses, comma-separated (default: all)')
    ap.add_argument('--max-steps', type=int, default=None); ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--starts', default='cnn,blind'); ap.add_argument('--out', default='fit')
    ap.add_argument('--core', type=int, default=FitConfig.core_supersample, help='FitConfig.core_supersample (0: off)')
    ap.add_argument('--psf-margin', type=float, default=FitConfig.psf_margin, help='FitConfig.psf_margin, PSF sigmas (0: off)')
    ap.add_argument('--cusp', type=int, default=int(FitConfig.source_cusp), help='FitConfig.source_cusp (0: off, 1: on)')
    ap.add_argument('--source-core', type=float, default=FitConfig.source_core or 0.0,
                    help="FitConfig.source_core: the source Sérsic's core, sub-pixels (0: off, the plain Sérsic's cusp)")
    ap.add_argument('--ellipticity-sigma', type=float, default=FitConfig.ellipticity_sigma or 0,
                    help="FitConfig.ellipticity_sigma: the mass e1, e2's Gaussian prior about the lens light's (0: off)")
    ap.add_argument('--shear-sigma', type=float, default=FitConfig.shear_sigma or 0,
                    help="FitConfig.shear_sigma: the shear's Gaussian prior about 0 (0: off)")
    ap.add_argument('--source', default=FitConfig.source, choices=('sersic', 'mge'), help='FitConfig.source')
    ap.add_argument('--coarse-margin', type=int, default=int(FitConfig.coarse_margin),
                    help="FitConfig.coarse_margin: the PSF margin's pixels at their centres (0: off, supersampled like the rest)")
    ap.add_argument('--footprint', type=int, default=int(FitConfig.footprint), help='FitConfig.footprint (0: off, 1: on)')
    ap.add_argument('--leapfrog', type=int, default=None, help="SamplerConfig.leapfrog: leapfrog steps per HMC trajectory (default: the sampler's)")
    ap.add_argument('--leapfrog-long', type=int, default=None,
                    help="SamplerConfig.leapfrog_long: a chain still random-walking goes on with trajectories this long (default: the sampler's; 0: never)")
    ap.add_argument('--metric', default=None, choices=('curvature', 'covariance'),
                    help="SamplerConfig.metric: HMC's metric, the chain's covariance with the walkers' curvature, or alone (default: the sampler's)")
    ap.add_argument('--lengthen-ratio', type=float, default=None,
                    help="SamplerConfig.lengthen_ratio: lengthened where tau_max is above 1/R of the iterations (default: the sampler's)")
    ap.add_argument('--step-jitter', default=None,
                    help="SamplerConfig.step_jitter: the range of the HMC step's random factor (uniform), 'low,high' (default: the sampler's)")
    ap.add_argument('--lengthen-growth', type=float, default=None,
                    help="SamplerConfig.lengthen_growth: also lengthened where tau_max grew G-fold since half the iterations (default: the sampler's; 0: off)")
    ap.add_argument('--long-steps', type=int, default=None,
                    help="SamplerConfig.long_steps: a lengthened chain's iterations at most, its tuning included (default: the sampler's)")
    ap.add_argument('--long-extend', type=float, default=None,
                    help="SamplerConfig.long_extend: a lengthened chain at its cap with 50 tau within X times its length goes on (default: the sampler's; 0: off)")
    ap.add_argument('--small-steps', default=None,
                    help="SamplerConfig.small_steps: with probability P a walker's step x F, as P,F (default: the sampler's; 0: off)")
    ap.add_argument('--retry', type=float, default=None,
                    help="SamplerConfig.retry: delayed rejection, a badly rejected trajectory tried again with its step / A (default: the sampler's; 0: off)")
    ap.add_argument('--dtype', default=FitConfig.sample_dtype, choices=('float32', 'float64'),
                    help="FitConfig.sample_dtype: the swarm's and the sampler's images")
    ap.add_argument('--clump-widths', type=int, default=int(FitConfig.clump_widths), help='FitConfig.clump_widths (0: off, 1: on)')
    ap.add_argument('--cnn-offsets', default=','.join(str(k) for k in FitConfig.cnn_offsets),
                    help="FitConfig.cnn_offsets: theta_E starts, the CNN's + k of its sigma, comma-separated")
    ap.add_argument('--clump-min-gain', type=float, default=FitConfig.clump_min_gain,
                    help='FitConfig.clump_min_gain: clumps raising log L by less are dropped before the sampler')
    ap.add_argument('--polish-best', type=int, default=FitConfig.polish_best,
                    help='FitConfig.polish_best: of several starts, this many (of highest log L after the search) polished (default: all)')
    ap.add_argument('--compile', type=int, default=int(FitConfig.compile_sampler),
                    help="FitConfig.compile_sampler: the sampler's gradients through torch.compile (0: eager, 1: compiled)")
    ap.add_argument('--supersample', type=int, default=FitConfig.supersample, help="FitConfig.supersample: the model's sub-pixels per pixel")
    ap.add_argument('--truth-check', type=int, default=0,
                    help="1: also the truth's chi^2 on the fit's pixels; 2: and the mode found from the true lens (`truth_check`)")
    ap.add_argument('--mode-only', type=int, default=0, help="1: the mode from the CNN only, no sampler (`slnb.fit.fit_mode`)")
    ap.add_argument('--data-supersample', default='8,8', help='lenstronomy sub-pixels per pixel: everything, the lens light')
    ap.add_argument('--search-rounds', type=int, default=FitConfig.search_rounds,
                    help="FitConfig.search_rounds: 2, the best mode searched again from its own lens; 1: off")
    ap.add_argument('--clump-sigma', type=float, default=slnb.fit.CLUMP_SIGMA, help="arcsec: the clumps' width where not sampled")
    args = ap.parse_args()
    slnb.fit.CLUMP_SIGMA = args.clump_sigma
    wanted = args.starts.split(',')
    torch.manual_seed(0)
    cube, pred = reference_cube(args.n, args.seed, tuple(int(a) for a in args.data_supersample.split(',')))
    speed = {} if args.mode_only else likelihood_speed(cube, pred)
    if speed: print(f"one log L of {speed['walkers']} walkers ({speed['crop']}x{speed['crop']} pixels, 3 bands, clumps 3): "
          f"batched {speed['batched_s'] * 1e3:.0f} ms, lenstronomy one by one {speed['lenstronomy_s'] * 1e3:.0f} ms "
          f"({speed['ratio']:.1f}x); 16 walkers: log L {speed['log_l_16_s'] * 1e3:.0f} ms, with its gradient "
          f"{speed['value_and_grad_16_s'] * 1e3:.0f} ms; 8 walkers with the gradient: float64 "
          f"{speed['value_and_grad_8_float64_s'] * 1e3:.1f} ms, float32 {speed['value_and_grad_8_float32_s'] * 1e3:.1f} ms "
          f"({speed['float64_over_float32']:.2f}x), float32 compiled {speed['value_and_grad_8_compiled_s'] * 1e3:.1f} ms "
          f"({speed['eager_over_compiled']:.2f}x faster than eager; its first call, compiling, {speed['compile_s']:.1f} s); "
          f"the PSF margin supersampled too {speed['value_and_grad_8_compiled_full_margin_s'] * 1e3:.1f} ms "
          f"({speed['coarse_margin_gain']:.2f}x slower than at its pixels' centres); value and gradient in one graph "
          f"{speed['fused_gain']:.2f}x faster than autograd over a compiled log L (the polish's call: "
          f"{speed['fused_gain_polish']:.2f}x; compiling those two graphs {speed['compile_two_graphs_s']:.1f} s)", flush=True)
    hmc = FitConfig().sampler
    hmc = replace(hmc, max_steps=args.max_steps or hmc.max_steps, leapfrog=args.leapfrog or hmc.leapfrog,
                  leapfrog_long=hmc.leapfrog_long if args.leapfrog_long is None else args.leapfrog_long or None,
                  lengthen_ratio=args.lengthen_ratio or hmc.lengthen_ratio, metric=args.metric or hmc.metric,
                  lengthen_growth=hmc.lengthen_growth if args.lengthen_growth is None else args.lengthen_growth or None,
                  long_extend=hmc.long_extend if args.long_extend is None else args.long_extend or None,
                  long_steps=args.long_steps or hmc.long_steps,
                  step_jitter=tuple(float(v) for v in args.step_jitter.split(',')) if args.step_jitter else hmc.step_jitter,
                  retry=hmc.retry if args.retry is None else args.retry or None,
                  small_steps=hmc.small_steps if args.small_steps is None else
                  tuple(float(v) for v in args.small_steps.split(',')) if args.small_steps != '0' else None)
    cfg = FitConfig(sampler=hmc, core_supersample=args.core or None, psf_margin=args.psf_margin,
                    source_cusp=bool(args.cusp), source_core=args.source_core or None, ellipticity_sigma=args.ellipticity_sigma or None,
                    shear_sigma=args.shear_sigma or None, source=args.source, footprint=bool(args.footprint),
                    clump_widths=bool(args.clump_widths), sample_dtype=args.dtype,
                    clump_min_gain=args.clump_min_gain, cnn_offsets=tuple(float(k) for k in args.cnn_offsets.split(',')),
                    polish_best=args.polish_best, compile_sampler=bool(args.compile), supersample=args.supersample,
                    coarse_margin=bool(args.coarse_margin),
                    search_rounds=args.search_rounds)
    terms = truth_terms(args.n, args.seed, cube.catalog) if args.truth_check else None
    rows = []
    for i in ([int(a) for a in args.ids.split(',')] if args.ids else range(args.n)):
        truth = {p: float(cube.catalog[p][i]) for p in PARAM_NAMES}
        if args.mode_only:
            t0 = time.perf_counter()
            lk, f, x = fit_mode(cube, i, pred[i], cfg)
            sec = time.perf_counter() - t0
            row = dict(id=i, start='cnn', theta_E=float(lk.kwargs(x)['lens'][0]['theta_E']), chi2_red=chi2_pixel(lk, x),
                       seconds=sec, truth_theta_E=truth['theta_E'], cnn_rel_error=float(pred['theta_E'][i]) / truth['theta_E'] - 1)
            row['rel_error'] = row['theta_E'] / truth['theta_E'] - 1
            if terms is not None: row.update(truth_check(cube, i, lk, row['chi2_red'], terms[i], pred[i], cfg, args.truth_check > 1))
            rows.append(row)
            print(f"lens {i} mode: theta_E {row['theta_E']:.3f} true {truth['theta_E']:.3f} ({row['rel_error']:+.2%}; CNN "
                  f"{row['cnn_rel_error']:+.2%}), chi2/pix {row['chi2_red']:.3f} (truth {row.get('chi2_truth', np.nan):.3f}), "
                  f"{sec:.0f} s", flush=True)
            continue
        for start in [s for s in (('cnn', 'blind') if i < args.blind else ('cnn',)) if s in wanted]:
            graphs = _graph_count()
            r = fit_lens(cube, i, pred[i] if start == 'cnn' else None, cfg)
            row = fit_row(int(cube.catalog['id'][i]), r)
            row.update(graphs_compiled=_graph_count() - graphs, crop=r.lk.model.crop, clumps=r.lk.model.clumps)
            row.update(truth_theta_E=truth['theta_E'],
                       arc_snr=float(cube.catalog['arc_snr'][i]), source_kind=str(cube.catalog['source_kind'][i]),
                       rel_error=row['theta_E'] / truth['theta_E'] - 1, neighbours=r.lk.model.neighbours,
                       slowest={r.lk.names[k]: float(r.chain.tau[k]) for k in np.argsort(-np.nan_to_num(r.chain.tau, nan=np.inf))[:4]},
                       retuned_at=list(r.chain.retuned_at), lengthened_at=r.chain.lengthened_at, retries=list(r.chain.retries),
                       covered68=bool(row['theta_E_lo'] <= truth['theta_E'] <= row['theta_E_hi']), cnn_rel_error=float(pred['theta_E'][i]) / truth['theta_E'] - 1,
                       **{f't_{k}': v for k, v in r.seconds.items()},
                       **{f'true_{p}': truth[p] for p in PARAM_NAMES},
                       **{f'cnn_{p}{s}': float(pred[p + s][i]) for p in PARAM_NAMES for s in ('', '_std')})
            if terms is not None and start == 'cnn':
                row.update(truth_check(cube, i, r.lk, r.chi2_red, terms[i], pred[i], cfg, args.truth_check > 1))
                print(f"lens {i} truth check: chi2/pix truth {row['chi2_truth']:.3f} (fit - truth: delta chi2 "
                      f"{row['delta_chi2_truth']:+.0f})" + (f", from the true lens {row['chi2_oracle']:.3f} (theta_E "
                      f"{row['oracle_theta_E'] / truth['theta_E'] - 1:+.2%}; fit - that: {row['delta_chi2_oracle']:+.0f})"
                      if 'chi2_oracle' in row else ''), flush=True)
            rows.append(row)
            print(f"lens {i} {start:5s}: theta_E {row['theta_E']:.3f} [{row['theta_E_lo']:.3f}, {row['theta_E_hi']:.3f}] "
                  f"true {truth['theta_E']:.3f} ({row['rel_error']:+.2%}; CNN {row['cnn_rel_error']:+.2%}), chi2/pix "
                  f"{row['chi2_red']:.2f}, tau_max {row['tau_max']:.1f}, {row['n_steps']} steps, converged "
                  f"{row['converged']}, acceptance {row['acceptance']:.2f}, neighbours {row['neighbours']}, {r.seconds['total']:.0f} s (search {r.seconds['search']:.0f}, polish "
                  f"{r.seconds['polish']:.0f}, mcmc {r.seconds['mcmc']:.0f}, of all that compiling {r.seconds.get('compile', 0):.0f}; crop {row['crop']}, clumps {row['clumps']}, graphs compiled {row['graphs_compiled']}); re-tuned at {row['retuned_at']}, lengthened at {row['lengthened_at']}, second tries {row['retries']}; slowest: "
                  + ', '.join(f'{k} {v:.0f}' for k, v in row['slowest'].items()), flush=True)
    cnn = [r for r in rows if r['start'] == 'cnn']
    if args.mode_only:
        return _write(args.out, dict(mode_only=True, n=len(cnn), supersample=args.supersample, search_rounds=args.search_rounds,
                                     clump_sigma=args.clump_sigma,
                                     data_supersample=args.data_supersample, footprint=bool(args.footprint),
                                     source_cusp=bool(args.cusp), clump_widths=bool(args.clump_widths),
                                     median_abs_rel_error=float(np.median([abs(r['rel_error']) for r in cnn])),
                                     cnn_prediction_median_abs_rel_error=float(np.median([abs(r['cnn_rel_error']) for r in cnn])),
                                     median_seconds=float(np.median([r['seconds'] for r in cnn]))), rows)
    blind = [r for r in rows if r['start'] == 'blind']
    paired = [(c, b) for b in blind for c in cnn if c['id'] == b['id']]
    med = lambda v: float(np.median(v)) if len(v) else None
    summary = dict(
        n=len(cnn), data_supersample=args.data_supersample, supersample=args.supersample, clump_sigma=args.clump_sigma, max_steps=cfg.sampler.max_steps, leapfrog=cfg.sampler.leapfrog, leapfrog_long=cfg.sampler.leapfrog_long, lengthen_ratio=cfg.sampler.lengthen_ratio, lengthen_growth=cfg.sampler.lengthen_growth, long_extend=cfg.sampler.long_extend, long_steps=cfg.sampler.long_steps, metric=cfg.sampler.metric, step_jitter=list(cfg.sampler.step_jitter), small_steps=cfg.sampler.small_steps, retry=cfg.sampler.retry, core_supersample=args.core, psf_margin=args.psf_margin, coarse_margin=bool(args.coarse_margin), source_cusp=bool(args.cusp), source_core=args.source_core,
        ellipticity_sigma=args.ellipticity_sigma, shear_sigma=args.shear_sigma, source=args.source,
        footprint=bool(args.footprint), clump_widths=bool(args.clump_widths), sample_dtype=args.dtype, clump_min_gain=args.clump_min_gain, cnn_offsets=args.cnn_offsets, polish_best=args.polish_best, compile_sampler=cfg.compile_sampler, search_rounds=args.search_rounds, likelihood=speed,
        cnn_median_abs_rel_error=med([abs(r['rel_error']) for r in cnn]),
        cnn_prediction_median_abs_rel_error=med([abs(r['cnn_rel_error']) for r in cnn]),
        converged=int(sum(r['converged'] for r in cnn)), median_tau_max=med([r['tau_max'] for r in cnn]),
        theta_E_coverage68=float(np.mean([r['covered68'] for r in cnn])) if cnn else None,
        median_seconds_cnn=med([r['seconds'] for r in cnn]),
        median_seconds_cnn_without_compile=med([r['seconds'] - r.get('t_compile', 0.0) for r in cnn]),   # a field's steady
        seconds_compile=float(sum(r.get('t_compile', 0.0) for r in rows)),      # state: each structure's graphs built
        blind_median_abs_rel_error=med([abs(r['rel_error']) for r in blind]), median_seconds_blind=med([r['seconds'] for r in blind]),
        blind_over_cnn_time=[b['seconds'] / c['seconds'] for c, b in paired],
        same_mode=[abs(b['theta_E'] - c['theta_E']) < 0.02 * c['theta_E'] for c, b in paired])
    _write(args.out, summary, rows)


def _write(name: str, summary: dict, rows: list[dict]) -> None:
    "Print the summary; write it and the rows to bench/out/<name>.json."
    print(json.dumps(summary, indent=1))
    OUT.mkdir(exist_ok=True)
    with atomic_write(OUT / f'{name}.json') as f: f.write(json.dumps(dict(summary=summary, rows=rows), indent=1, default=float))


if __name__ == '__main__':
    main()

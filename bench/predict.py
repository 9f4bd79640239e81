"""CNN lens modelling: accuracy, calibration and speed of the shipped LSST g,r,i predictor, and its time against one
MCMC fit.

Targets (issue 7), on lenses made by lenstronomy (every pixel: `slnb.reference.reference_lenses`) with arc S/N >= 20:
median |theta_E error| / theta_E <= 3%; each parameter's 68% interval covering 0.68 +- 0.08 of the truths; >= 1000
lenses/s on this CPU, start-up excluded. A predictor trained on the deblender's ARCS beside the image (card `inputs`
'image+arcs') gets them from the shipped deblender, made once here (in the pipeline the deblend stage has made them
already); its speed is given without and with the deblender's time. The lenses are made once and kept in bench/out/. The MCMC reference is one
lenstronomy + emcee fit of one of these lenses (i band; SIE + SHEAR, Sérsic lens light and source), started at the CNN's
prediction, with `--mcmc-burn` + `--mcmc-run` steps: a short chain (issue 8's fits run longer), so the ratio is a floor.

Run: `python bench/predict.py [--n 1000] [--seed 7]` (or `make bench`); writes bench/out/predict.json.
"""
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from slnb.core import PARAM_NAMES
from slnb.deblend import deblend_images, find_deblender, load_deblender
from slnb.predict import (coverage, find_predictor, load_predictor, normalised_errors, predict_parameters,
                          prediction_metrics)
from slnb.reference import lenstronomy_band, reference_lenses

OUT = Path(__file__).parent / 'out'


def lenses(n: int, seed: int, min_arc_snr: float = 20.0):
    "noisy images (N, 3, 64, 64), truth (N, 7) and arc S/N of n lenstronomy-made LSST g,r,i lenses, cached in bench/out/."
    f = OUT / f'predict_lenses_n{n}_seed{seed}_snr{min_arc_snr:g}.npz'
    if f.is_file():
        d = np.load(f); return d['noisy'], d['truth'], d['arc_snr']
    t0 = time.perf_counter()
    noisy, _, _, cat = reference_lenses(n, 'LSST', 'g,r,i', seed, min_arc_snr=min_arc_snr)
    truth = np.stack([np.asarray(cat[p], float) for p in PARAM_NAMES], 1)
    OUT.mkdir(exist_ok=True)
    tmp = f.with_suffix('.tmp.npz')
    np.savez_compressed(tmp, noisy=noisy, truth=truth, arc_snr=np.asarray(cat['arc_snr']))
    os.replace(tmp, f)
    print(f"made {n} lenses with lenstronomy in {time.perf_counter() - t0:.0f} s -> {f}")
    return noisy, truth, np.asarray(cat['arc_snr'])


def throughput(model, card, images, compile: bool, arcs=None, repeat: int = 3) -> float:
    "Lenses per second of predict_parameters on `images` (and their ARCS), after one warm-up pass (start-up excluded)."
    predict_parameters(model, card, images, compile=compile, arcs=arcs)
    t0 = time.perf_counter()
    for _ in range(repeat): predict_parameters(model, card, images, compile=compile, arcs=arcs)
    return repeat * len(images) / (time.perf_counter() - t0)


def deblend_rate(deblender, images) -> float:
    "Lenses per second of a deblender (model, card) on `images` (after a warm-up batch)."
    deblend_images(*deblender, images[:64])
    t0 = time.perf_counter(); deblend_images(*deblender, images)
    return len(images) / (time.perf_counter() - t0)


BOUNDS = dict(theta_E=(0.05, 5.0), e1=(-0.5, 0.5), e2=(-0.5, 0.5), gamma1=(-0.3, 0.3), gamma2=(-0.3, 0.3),
              center_x=(-2.0, 2.0), center_y=(-2.0, 2.0), R_sersic=(0.02, 10.0), n_sersic=(0.5, 8.0))


def one_mcmc_fit(image: np.ndarray, start: np.ndarray, n_burn: int, n_run: int, seed: int = 0) -> float:
    "Seconds of one lenstronomy + emcee fit of one band (SIE + SHEAR, Sérsic lens light and source) from `start`."
    from lenstronomy.SimulationAPI.data_api import DataAPI
    from lenstronomy.Workflow.fitting_sequence import FittingSequence
    kw = lenstronomy_band('LSST', 'i')
    kw_data = DataAPI(image.shape[-1], **kw).kwargs_data
    kw_data['image_data'] = image
    te, e1, e2, g1, g2, cx, cy = (float(v) for v in start)
    lens = [dict(theta_E=te, e1=e1, e2=e2, center_x=cx, center_y=cy), dict(gamma1=g1, gamma2=g2)]
    light = [dict(R_sersic=1.0, n_sersic=4.0, e1=e1, e2=e2, center_x=cx, center_y=cy)]
    src = [dict(R_sersic=0.2, n_sersic=1.0, e1=0.0, e2=0.0, center_x=cx, center_y=cy)]
    part = lambda kws, fixed: [kws, [{k: 0.05 for k in d} for d in kws], fixed,
                               [{k: BOUNDS[k][0] for k in d} for d in kws], [{k: BOUNDS[k][1] for k in d} for d in kws]]
    params = dict(lens_model=part(lens, [{}, {'ra_0': 0, 'dec_0': 0}]), source_model=part(src, [{}]),
                  lens_light_model=part(light, [{}]))
    models = dict(lens_model_list=['SIE', 'SHEAR'], source_light_model_list=['SERSIC_ELLIPSE'],
                  lens_light_model_list=['SERSIC_ELLIPSE'])
    data = dict(multi_band_list=[[kw_data, dict(psf_type='GAUSSIAN', fwhm=kw['seeing']), {'supersampling_factor': 1}]],
                multi_band_type='single-band')
    fs = FittingSequence(data, models, {}, {'source_marg': False}, params)
    np.random.seed(seed)
    t0 = time.perf_counter()
    fs.fit_sequence([['emcee', dict(n_burn=n_burn, n_run=n_run, walkerRatio=4, sigma_scale=0.1,
                                   progress=False)]])
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=1000, help='lenstronomy-made lenses (arc S/N >= 20)')
    ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--weights', default=None, help="a predictor's weights folder (default: the shipped LSST g,r,i one)")
    ap.add_argument('--mc-dropout', type=int, default=16, help='dropout passes for the comparison (0: skip)')
    ap.add_argument('--mcmc-burn', type=int, default=100); ap.add_argument('--mcmc-run', type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    noisy, truth, snr = lenses(args.n, args.seed)
    folder = Path(args.weights) if args.weights else find_predictor('LSST', 'g,r,i')
    model, card = load_predictor(folder)
    arcs = deblender = None
    if card.get('inputs', 'image') == 'image+arcs':
        deblender = load_deblender(find_deblender('LSST', 'g,r,i'))
        arcs = deblend_images(*deblender, noisy)[1]
        print(f"{folder.name} reads the image and {card['deblender']}'s ARCS of it")
    pred, raw = predict_parameters(model, card, noisy, arcs=arcs), predict_parameters(model, card, noisy, calibrated=False, arcs=arcs)
    m = prediction_metrics(pred, truth)
    z, z_raw = normalised_errors(pred, truth), normalised_errors(raw, truth)
    out = dict(n=len(noisy), weights=folder.name, arc_snr_median=float(np.median(snr)), **m,
               coverage68_raw=coverage(z_raw).tolist(), coverage95_raw=coverage(z_raw, 1.96).tolist(),
               coverage95=coverage(z, 1.96).tolist())
    print(f"\n== {len(noisy)} LSST g,r,i lenses made by lenstronomy, arc S/N {snr.min():.0f}-{snr.max():.0f} (median "
          f"{np.median(snr):.0f}), predictor {folder.name}")
    print(f"theta_E: median |error| / theta_E {m['theta_E_median_rel_error']:.4f} (target <= 0.03), median bias "
          f"{m['theta_E_median_bias']:+.4f}")
    print(f"{'':10s} {'RMS error':>10s} {'68% raw':>8s} {'68% cal':>8s} {'95% raw':>8s} {'95% cal':>8s}")
    for i, p in enumerate(PARAM_NAMES):
        print(f"{p:10s} {m['rms'][p]:10.4f} {out['coverage68_raw'][i]:8.3f} {m['coverage68'][i]:8.3f} "
              f"{out['coverage95_raw'][i]:8.3f} {out['coverage95'][i]:8.3f}")
    if args.mc_dropout:
        for label, kw in (('MC dropout only', dict(mc_only=True, calibrated=False)),
                          ('MC dropout + Gaussian', dict(calibrated=False)), ('MC dropout + Gaussian, calibrated', {})):
            pm = predict_parameters(model, card, noisy, mc_dropout=args.mc_dropout, arcs=arcs, **kw)
            mm = prediction_metrics(pm, truth)
            out[label] = mm
            print(f"{label:34s} theta_E error {mm['theta_E_median_rel_error']:.4f}, 68% coverage "
                  + ' '.join(f'{c:.2f}' for c in mm['coverage68']))
    x = np.concatenate([noisy] * max(1, 4096 // len(noisy)))[:4096]
    xa = None if arcs is None else np.concatenate([arcs] * max(1, 4096 // len(noisy)))[:4096]
    eager, compiled = throughput(model, card, x, False, xa), throughput(model, card, x, True, xa)
    out.update(lenses_per_s_eager=eager, lenses_per_s_compiled=compiled, threads=torch.get_num_threads())
    print(f"speed on this CPU ({torch.get_num_threads()} threads, batch 256, 4096 lenses, start-up excluded): "
          f"{eager:.0f} lenses/s eager, {compiled:.0f} lenses/s compiled (target >= 1000)"
          + (' given the ARCS' if arcs is not None else ''))
    if arcs is not None:
        d = deblend_rate(deblender, x[:1024])
        both = 1 / (1 / d + 1 / max(eager, compiled))
        out.update(deblend_lenses_per_s=d, deblend_and_predict_lenses_per_s=both)
        print(f"the deblender alone: {d:.0f} lenses/s; deblender + predictor: {both:.0f} lenses/s")
    i = int(np.argsort(snr)[len(snr) // 2])
    t_fit = one_mcmc_fit(noisy[i, 2].astype(float), pred['mean'][i], args.mcmc_burn, args.mcmc_run)
    out.update(mcmc_seconds=t_fit, mcmc_steps=args.mcmc_burn + args.mcmc_run, time_ratio=t_fit * max(eager, compiled))
    print(f"one MCMC fit (lenstronomy + emcee, i band, {args.mcmc_burn}+{args.mcmc_run} steps x 4 walkers per parameter): "
          f"{t_fit:.1f} s = {t_fit * max(eager, compiled):.2e} x the CNN's time per lens")
    OUT.mkdir(exist_ok=True)
    (OUT / 'predict.json').write_text(json.dumps(out, indent=1) + '\n')


if __name__ == '__main__':
    main()

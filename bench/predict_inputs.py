"""Does lens-light removal help the CNN modeller? Two small predictors trained alike (same seed, steps, simulations and
views): one on the noisy image, one with the arcs alone beside it (the noiseless true arcs in training: the upper bound
of what a deblender can give), judged on lenstronomy-made LSST g,r,i lenses (arc S/N >= 20): the second with the true
arcs (the bound) and with the shipped deblender's ARCS of the noisy image (what the pipeline would have).

Run: `python bench/predict_inputs.py [--steps 2000] [--n 500]`; writes bench/out/predict_inputs.json.
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
from slnb.detect import TrainingPool, band_noise, normalise
from slnb.predict import (gaussian_nll, make_predictor, predict_parameters, prediction_metrics, predictor_view,
                          to_targets)
from slnb.reference import reference_lenses
from slnb.surveys import get_survey

OUT = Path(__file__).parent / 'out'


def train(pool, sigma, mean, std, with_arcs: bool, steps: int, seed: int):
    "A small predictor trained on `steps` batches of 128 views (OneCycle, lr 2e-3)."
    torch.manual_seed(seed)
    model = make_predictor(6 if with_arcs else 3, 64, 'small').to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    s = torch.cat([sigma, sigma]) if with_arcs else sigma
    for step in range(steps):
        model.train()
        x, p = predictor_view(pool, 128, gen, 1.0, with_arcs)
        loss = gaussian_nll(model(normalise(x, s).contiguous(memory_format=torch.channels_last)), to_targets(p, mean, std))
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0); opt.step(); sched.step()
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=2000); ap.add_argument('--n', type=int, default=500)
    ap.add_argument('--pool', type=int, default=8192); ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    bands = get_survey('LSST').select('g,r,i')
    sigma = band_noise(bands)
    pool = TrainingPool(bands, args.pool, args.seed, 64, 1.0, 10.0, keep_arcs=True, keep_params=True, show_progress=False)
    t = pool.params[pool.label > 0].clone(); t[:, 0] = t[:, 0].log()
    mean, std = t.mean(0).tolist(), t.std(0).tolist()
    noisy, clean, arcs, cat = reference_lenses(args.n, 'LSST', 'g,r,i', 7, min_arc_snr=20, show_progress=False)
    truth = np.stack([np.asarray(cat[p], float) for p in PARAM_NAMES], 1)
    _, arcs_hat = deblend_images(*load_deblender(find_deblender('LSST', 'g,r,i')), noisy)
    out = {}
    for with_arcs in (False, True):
        t0 = time.perf_counter()
        model = train(pool, sigma, mean, std, with_arcs, args.steps, args.seed)
        card = dict(noise_sigma=(torch.cat([sigma, sigma]) if with_arcs else sigma).tolist(), target_mean=mean,
                    target_std=std, calibration=[1.0] * 7)
        tests = {'noisy image': noisy} if not with_arcs else {
            'noisy + true arcs (bound)': np.concatenate([noisy, arcs], 1),
            'noisy + deblender ARCS': np.concatenate([noisy, arcs_hat], 1)}
        for name, x in tests.items():
            m = prediction_metrics(predict_parameters(model, card, x), truth)
            out[name] = dict(theta_E_median_rel_error=m['theta_E_median_rel_error'], rms=m['rms'],
                             by_theta_E=m['theta_E_median_rel_error_by_theta_E'], train_seconds=time.perf_counter() - t0)
            print(f"{name:28s} theta_E median |error| / theta_E {m['theta_E_median_rel_error']:.4f}; RMS e1 "
                  f"{m['rms']['e1']:.3f}, gamma1 {m['rms']['gamma1']:.3f}, center_x {m['rms']['center_x']:.4f}", flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / 'predict_inputs.json').write_text(json.dumps(dict(steps=args.steps, n=args.n, **out), indent=1) + '\n')


if __name__ == '__main__':
    main()

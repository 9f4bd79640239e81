"""Does denoising and deblending help? Detection and a simple modeller with and without them (issue 6, point 4).

Detection: three copies of one small finder (slnb.detect, 'small'), trained with the same seed, steps and simulated
cutouts (LSST g,r,i, hard look-alikes), on (a) the noisy images, (b) DENOISED, (c) DENOISED and ARCS together (six
channels); each scored on lenses and look-alikes made by lenstronomy. Modelling, until the CNN modeller exists: a
simple Einstein-radius estimator (the flux-weighted median radius of the arc pixels above 2 sigma, about the lens
light's centre) on the U-Net's ARCS, against the same estimator on the classical route (noisy image minus a
lenstronomy Sérsic fit of the lens light), on the same lenstronomy-made lenses.

Run: `python bench/denoise_helps.py [--train 6000] [--steps 1500]` (~30 min on 2 CPU cores); writes
bench/out/denoise_helps.json, which nbs/30_deblend.ipynb shows.
"""
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from slnb.deblend import deblend_images, find_deblender, load_deblender, sersic_fit_lens_light
from slnb.denoise import denoise_images, find_denoiser, load_denoiser
from slnb.detect import band_noise, finder_logits, finder_metrics, make_finder, normalise, random_dihedral, validation_set
from slnb.reference import reference_lenses, reference_set
from slnb.surveys import get_survey

OUT = Path(__file__).parent / 'out'


def stages(x: np.ndarray, nets) -> tuple[np.ndarray, np.ndarray]:
    "DENOISED and ARCS (N, B, H, W) of noisy cutouts x, by the shipped LSST networks."
    (dm, dc), (bm, bc) = nets
    den = denoise_images(dm, dc, x, batch=128)
    return den, deblend_images(bm, bc, x, denoised=den, batch=128)[1]


def train_and_score(train_x, train_y, test_x, sigma, steps: int, seed: int = 0) -> np.ndarray:
    "Train a small finder on train_x (N, C, 64, 64) electron/s for `steps` steps; logits of test_x."
    torch.manual_seed(seed)
    model = make_finder(train_x.shape[1], 'small')
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    X, Y = torch.as_tensor(train_x), torch.as_tensor(train_y, dtype=torch.float32)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (64,), generator=gen)
        x = normalise(random_dihedral(X[idx], gen), sigma)
        loss = F.binary_cross_entropy_with_logits(model(x), Y[idx])
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    return finder_logits(model.eval(), test_x, sigma)


def theta_e_from_arcs(arcs: np.ndarray, lens_light: np.ndarray, sigma, pixel_scale: float) -> np.ndarray:
    "Einstein radius (N,) arcsec: flux-weighted median radius of band-summed arc pixels above 2 sigma, about the lens light's peak."
    N, B, H, W = arcs.shape
    a = (arcs / np.asarray(sigma)[:, None, None]).sum(1) / np.sqrt(B)
    ll = lens_light.sum(1)
    yy, xx = np.mgrid[:H, :W]
    out = np.full(N, np.nan)
    for i in range(N):
        r0, c0 = np.unravel_index(np.argmax(ll[i]), (H, W))
        sel = a[i] > 2
        if sel.sum() < 3: continue
        r, w = np.hypot(xx - c0, yy - r0)[sel], a[i][sel]
        o = np.argsort(r)
        out[i] = r[o][np.searchsorted(np.cumsum(w[o]), 0.5 * w.sum())] * pixel_scale
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--train', type=int, default=6000, help='simulated training cutouts')
    ap.add_argument('--steps', type=int, default=1500, help='finder training steps (batch 64)')
    ap.add_argument('--lenses', type=int, default=300, help='lenstronomy-made lenses in the test set')
    ap.add_argument('--nonlenses', type=int, default=3000, help='lenstronomy-made look-alikes in the test set')
    ap.add_argument('--fits', type=int, default=150, help='lenses for the modelling comparison (Sérsic fits take ~0.5 s each)')
    ap.add_argument('--parts', default='detection,modelling', help='which comparisons to run')
    args = ap.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    bands = get_survey('LSST').select('g,r,i')
    sigma = band_noise(bands)
    nets = (load_denoiser(find_denoiser('LSST', 'g,r,i')), load_deblender(find_deblender('LSST', 'g,r,i')))
    t0 = time.time()
    f = OUT / 'denoise_helps.json'
    res = json.loads(f.read_text()) if f.is_file() else dict(detection={}, modelling={})
    res['config'] = vars(args)
    if 'detection' in args.parts: res['detection'] = detection(args, bands, sigma, nets, t0)
    if 'modelling' in args.parts: res['modelling'] = modelling(args, bands, sigma, nets)
    OUT.mkdir(exist_ok=True)
    tmp = OUT / 'denoise_helps.json.tmp'
    tmp.write_text(json.dumps(res, indent=1)); os.replace(tmp, f)
    print(f"-> {f} ({time.time() - t0:.0f} s)")


def detection(args, bands, sigma, nets, t0) -> dict:
    "AUC, TPR0, TPR10 of one small finder trained on noisy, DENOISED, and DENOISED + ARCS inputs."
    tr_x, tr_y, _ = validation_set(bands, args.train, seed=100)
    ref = reference_set(args.lenses, args.nonlenses, seed=23, show_progress=False)
    te_x, te_y = ref.images, np.asarray(ref.catalog['is_lens']) == 1
    (tr_d, tr_a), (te_d, te_a) = stages(tr_x, nets), stages(te_x, nets)
    print(f"data and stages: {time.time() - t0:.0f} s ({len(tr_x)} training cutouts, {te_y.sum()} + {(~te_y).sum()} test)")
    out, sig6 = {}, torch.cat([sigma, sigma])
    for name, trx, tex, sg in (('noisy', tr_x, te_x, sigma), ('DENOISED', tr_d, te_d, sigma),
                               ('DENOISED + ARCS', np.concatenate([tr_d, tr_a], 1), np.concatenate([te_d, te_a], 1), sig6)):
        t1 = time.time()
        m = finder_metrics(train_and_score(trx.astype(np.float32), tr_y, tex.astype(np.float32), sg, args.steps), te_y)
        out[name] = m
        print(f"  finder on {name:16s} AUC {m['auc']:.4f}  TPR0 {m['tpr0']:.3f}  TPR10 {m['tpr10']:.3f}  ({time.time() - t1:.0f} s)")
    return out


def modelling(args, bands, sigma, nets) -> dict:
    "Median relative error of a simple theta_E estimator on the U-Net's ARCS, on noisy - Sérsic fit, and on the true arcs."
    out = {}
    noisy, clean, arcs, cat = reference_lenses(args.fits, 'LSST', 'g,r,i', seed=29, show_progress=False)
    true = np.asarray(cat['theta_E'])
    den, arcs_hat = stages(noisy, nets)
    ll_hat = den - arcs_hat
    fit = np.stack([sersic_fit_lens_light(x, bands, 0.2) for x in noisy])
    sig = sigma.numpy()
    for name, a, ll in (('U-Net ARCS', arcs_hat, ll_hat), ('noisy - Sérsic fit', noisy - fit, fit),
                        ('(truth: noiseless arcs)', arcs, clean - arcs)):
        est = theta_e_from_arcs(a, ll, sig, 0.2)
        e = np.abs(est - true) / true
        out[name] = dict(median_rel_error=float(np.nanmedian(e)), n_measured=int(np.isfinite(e).sum()), n=len(e))
        print(f"  theta_E from {name:24s} median |error| / theta_E {np.nanmedian(e):.3f} ({np.isfinite(e).sum()} of {len(e)} measured)")
    return out


if __name__ == '__main__':
    main()

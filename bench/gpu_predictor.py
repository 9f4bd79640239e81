"""Train the shipped LSST lens predictor on a GPU inside a fixed wall-clock budget, then time it there.

A GPU session is short (this project is lent a few minutes of one), so the run sizes itself: it first times the
three parts of training on the device (simulating 4096 lenses, deblending 4096 views, 40 optimiser steps), then
chooses the number of stored views and of steps that fit the budget, trains with `slnb.predict.train_predictor`
(the same code as `slnb train predict-lsst-gri`), calibrates, and writes the weights folder and a JSON of timings.
The card records views, batch and steps, so `train_predictor(PredictorConfig(views=..., batch=..., steps=...))`
repeats the run on any GPU.

    python bench/gpu_predictor.py --budget 450 --out OUT_DIR
"""
from __future__ import annotations
import argparse, json, time
from pathlib import Path

import numpy as np
import torch

from slnb.core import get_device
from slnb.deblend import deblend_images, find_deblender, load_deblender
from slnb.detect import TrainingPool, band_noise, normalise, save_finder
from slnb.predict import (PredictorConfig, gaussian_nll, make_predictor, predict_raw, predictor_view, stored_view,
                          train_predictor)
from slnb.surveys import get_survey


def time_parts(cfg: PredictorConfig, device) -> dict:
    "Seconds to simulate 4096 lenses, to make and deblend 4096 views, and per optimiser step (batch cfg.batch), on `device`."
    bands = get_survey(cfg.survey).select(cfg.bands)
    t = time.time()
    pool = TrainingPool(bands, 4096, 999, cfg.num_pix, 1.0, cfg.min_arc_snr, show_progress=False, keep_params=True)
    t_sim = time.time() - t
    deb, card = load_deblender(find_deblender(cfg.survey, cfg.bands), str(device))
    gen = torch.Generator().manual_seed(1)
    deblend_images(deb, card, pool.clean[:256].float().numpy(), device=device)     # warm-up
    if device.type == 'cuda': torch.cuda.synchronize()
    t = time.time()
    x, p = predictor_view(pool, 4096, gen, cfg.max_shift_pix)
    _, arcs = deblend_images(deb, card, x.numpy(), device=device)
    t_deb = time.time() - t
    views = torch.cat([x, torch.as_tensor(arcs)], 1).half().to(device)
    sigma = torch.cat([band_noise(bands)] * 2).to(device)
    model = make_predictor(len(sigma), cfg.num_pix, cfg.size).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    def step():
        xb, pb = stored_view(views, p, cfg.batch, gen)
        xb = normalise(xb.to(device), sigma).contiguous(memory_format=torch.channels_last)
        loss = gaussian_nll(model(xb), pb.to(device) * 0)
        opt.zero_grad(); loss.backward(); opt.step(); loss.item()
    for _ in range(10): step()
    t = time.time()
    for _ in range(40): step()
    return dict(simulate_4096_s=t_sim, deblend_4096_s=t_deb, step_s=(time.time() - t) / 40)


def plan(parts: dict, seconds: float, cfg: PredictorConfig, calib_s: float = 45.0) -> tuple[int, int]:
    "Views and steps that fit `seconds`: views cost a simulation and a deblend per 4096 (beyond the pool's own)."
    pool_s = cfg.pool / 4096 * parts['simulate_4096_s']
    for views in (131072, 98304, 65536, 32768):
        view_s = views / 4096 * (parts['simulate_4096_s'] + parts['deblend_4096_s'])
        left = seconds - pool_s - view_s - calib_s
        if view_s < 0.45 * (seconds - pool_s - calib_s): break
    steps = int(left / (1.1 * parts['step_s']) // 1000 * 1000)
    return views, max(steps, 1000)


@torch.inference_mode()
def time_inference(model, card, device, n: int = 16384) -> dict:
    "Lenses/s of the predictor given ARCS (batch 1024) and of the deblender (batch 256) on `device`."
    x = np.random.default_rng(0).normal(0, 0.1, (n, len(card['noise_sigma']), 64, 64)).astype(np.float32)
    predict_raw(model, card, x[:2048], batch=1024, device=device, compile=False)
    if device.type == 'cuda': torch.cuda.synchronize()
    t = time.time(); predict_raw(model, card, x, batch=1024, device=device, compile=False)
    pred = n / (time.time() - t)
    deb, dcard = load_deblender(find_deblender(card['survey'], card['bands']), str(device))
    imgs = x[:4096, :3]
    deblend_images(deb, dcard, imgs[:512], batch=256, device=device)
    t = time.time(); deblend_images(deb, dcard, imgs, batch=256, device=device)
    return dict(predictor_lenses_per_s=pred, deblender_lenses_per_s=len(imgs) / (time.time() - t))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--budget', type=float, default=450, help='wall-clock seconds for the whole run')
    ap.add_argument('--out', default='bench/out/gpu', help='folder for the weights and gpu_predictor.json')
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--views', type=int, default=None, help='fix the views (else planned from the budget)')
    ap.add_argument('--steps', type=int, default=None, help='fix the steps (else planned from the budget)')
    ap.add_argument('--pool', type=int, default=16384)
    a = ap.parse_args()
    t0 = time.time()
    device = get_device('cuda' if torch.cuda.is_available() else 'cpu')
    cfg = PredictorConfig(survey='LSST', bands='g,r,i', batch=a.batch, lr=a.lr, pool=a.pool, compile=False)
    parts = time_parts(cfg, device)
    cfg.views, cfg.steps = plan(parts, a.budget - (time.time() - t0) - 20, cfg)
    cfg.views, cfg.steps = a.views or cfg.views, a.steps or cfg.steps
    print(json.dumps(dict(device=str(device), parts=parts, views=cfg.views, steps=cfg.steps)), flush=True)
    model, card = train_predictor(cfg, device, show_progress=False)
    card['device'] = torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'
    out = Path(a.out); save_finder(model, card, out / 'predict-lsst-gri')
    speed = time_inference(model, card, device)
    summary = dict(device=card['device'], parts=parts, views=cfg.views, steps=cfg.steps, batch=cfg.batch,
                   train_seconds=card['train_seconds'], validation=card['metrics']['validation'], **speed,
                   total_seconds=time.time() - t0, torch=torch.__version__)
    (out / 'gpu_predictor.json').write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()

"""Train the shipped LSST lens predictor on a GPU inside a fixed wall-clock budget, then time it there.

A GPU session is short (this project is lent a few minutes of one), so the run sizes itself: it first times the
parts of training on the device (simulating 4096 lenses, deblending 4096 views, optimiser steps at the run's batch
and precision, and at batch 256 in float32 for comparison), then chooses the number of stored views and of steps
that fit the budget, trains with `slnb.predict.train_predictor` (the same code as `slnb train predict-lsst-gri`),
calibrates, and writes the weights folder and a JSON of timings. The card records views, batch, steps and amp, so
`train_predictor(PredictorConfig(views=..., batch=..., steps=..., amp=...))` repeats the run on any GPU.

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


def time_steps(model, opt, views, p, sigma, batch: int, amp: bool, device, gen, n: int = 40) -> float:
    "Seconds per optimiser step at `batch` (bfloat16 autocast with `amp`), after 10 warm-up steps."
    def step():
        xb, pb = stored_view(views, p, batch, gen)
        xb = normalise(xb.to(device), sigma).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            raw = model(xb)
        loss = gaussian_nll(raw.float(), pb.to(device) * 0)
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0); opt.step()
    for _ in range(10): step()
    if device.type == 'cuda': torch.cuda.synchronize()
    t = time.time()
    for _ in range(n): step()
    if device.type == 'cuda': torch.cuda.synchronize()
    return (time.time() - t) / n


def time_parts(cfg: PredictorConfig, device) -> dict:
    "Seconds to simulate 4096 lenses, to make and deblend 4096 views, and per optimiser step (the run's batch and\
 precision, and batch 256 in float32 for comparison), on `device`."
    bands = get_survey(cfg.survey).select(cfg.bands)
    TrainingPool(bands, 256, 998, cfg.num_pix, 1.0, cfg.min_arc_snr, show_progress=False, device=device)   # warm-up
    t = time.time()
    pool = TrainingPool(bands, 4096, 999, cfg.num_pix, 1.0, cfg.min_arc_snr, show_progress=False, keep_params=True,
                        device=device)
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
    step_256_fp32 = time_steps(model, opt, views, p, sigma, 256, False, device, gen)
    step_s = time_steps(model, opt, views, p, sigma, cfg.batch, cfg.amp, device, gen)
    return dict(simulate_4096_s=t_sim, deblend_4096_s=t_deb, step_s=step_s, step_256_fp32_s=step_256_fp32,
                samples_per_s=cfg.batch / step_s, samples_per_s_256_fp32=256 / step_256_fp32)


def plan(parts: dict, seconds: float, cfg: PredictorConfig, calib_s: float = 45.0, passes: float = 60) -> tuple[int, int]:
    "Views and steps that fit `seconds` with each view seen about `passes` times (the shipped run's 57 did not overfit;\
 625 did): views cost a simulation and a deblend per 4096 beyond the pool's own, steps `step_s` each."
    pool_s = cfg.pool / 4096 * parts['simulate_4096_s']
    view_s = (parts['simulate_4096_s'] + parts['deblend_4096_s']) / 4096
    left = seconds - pool_s - calib_s
    steps = left / (1.1 * parts['step_s'] + cfg.batch * view_s / passes)
    views = int(steps * cfg.batch / passes // 4096 * 4096)
    return max(views, 4096), max(int(steps // 1000 * 1000), 1000)


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
    ap.add_argument('--batch', type=int, default=1024)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--fp32', action='store_true', help='train in float32 (default: bfloat16 autocast)')
    ap.add_argument('--views', type=int, default=None, help='fix the views (else planned from the budget)')
    ap.add_argument('--steps', type=int, default=None, help='fix the steps (else planned from the budget)')
    ap.add_argument('--pool', type=int, default=16384)
    a = ap.parse_args()
    t0 = time.time()
    device = get_device('cuda' if torch.cuda.is_available() else 'cpu')
    cfg = PredictorConfig(survey='LSST', bands='g,r,i', batch=a.batch, lr=a.lr, pool=a.pool, compile=False,
                          amp=not a.fp32)
    parts = time_parts(cfg, device)
    cfg.views, cfg.steps = plan(parts, a.budget - (time.time() - t0) - 20, cfg)
    cfg.views, cfg.steps = a.views or cfg.views, a.steps or cfg.steps
    print(json.dumps(dict(device=str(device), parts=parts, views=cfg.views, steps=cfg.steps)), flush=True)
    model, card = train_predictor(cfg, device, show_progress=False)
    card['device'] = torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'
    out = Path(a.out); save_finder(model, card, out / 'predict-lsst-gri')
    speed = time_inference(model, card, device)
    summary = dict(device=card['device'], parts=parts, views=cfg.views, steps=cfg.steps, batch=cfg.batch, amp=cfg.amp,
                   train_seconds=card['train_seconds'], validation=card['metrics']['validation'], **speed,
                   total_seconds=time.time() - t0, torch=torch.__version__)
    (out / 'gpu_predictor.json').write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == '__main__':
    main()

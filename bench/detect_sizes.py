"""Detection: the two finder sizes compared at an equal training budget, on fresh slnb simulations and on the
lenstronomy-made reference set (issue 5: "compare at least two sizes").

Both sizes are trained here with the same seed, pool and number of steps (`--steps`, default 1500, so that the pair
fits in under an hour on 2 cores), then scored on the same cutouts; the shipped small finder (4000 steps) is scored
beside them. The reference set is the one `bench/detect_reference.py` makes (made here if it is missing).

Run: `python bench/detect_sizes.py [--steps 1500] [--seed 0] [--reference FILE]`
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from slnb.detect import (finder_metrics, lens_probability, load_finder, train_shipped_finder, validation_set,
                         weights_root)
from slnb.io import read_cube, write_cube
from slnb.reference import reference_set
from slnb.surveys import get_survey


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--steps', type=int, default=1500)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', type=Path, default=Path('bench/out/sizes'))
    ap.add_argument('--reference', type=Path, default=Path('bench/out/reference-lsst-gri-1000-10000-seed7.fits'))
    ap.add_argument('--n-fresh', type=int, default=4000, help='fresh simulated cutouts (seed 2026) to score')
    args = ap.parse_args()
    folders = {}
    for size in ('small', 'medium'):
        folder = args.out / f"steps{args.steps}" / ('detect-lsst-gri' + ('' if size == 'small' else f'-{size}'))
        if not (folder / 'card.json').is_file():
            t0 = time.perf_counter()
            train_shipped_finder('detect-lsst-gri', args.seed, 'cpu', args.steps, size, folder.parent)
            print(f"trained {size} in {time.perf_counter() - t0:.0f} s")
        folders[f'{size}, {args.steps} steps'] = folder
    folders['small, shipped (4000 steps)'] = weights_root() / 'detect-lsst-gri'
    if not args.reference.is_file():
        args.reference.parent.mkdir(parents=True, exist_ok=True)
        write_cube(reference_set(1000, 10000, seed=7), args.reference)
    ref = read_cube(args.reference)
    sims = validation_set(get_survey('LSST').select('g,r,i'), args.n_fresh, seed=2026)
    sets = {'slnb simulations (seed 2026)': (sims[0], sims[1]),
            f'lenstronomy reference ({args.reference.name})': (ref.images, np.asarray(ref.catalog['is_lens']) == 1)}
    rows = []
    for name, folder in folders.items():
        model, card = load_finder(folder)
        row = dict(model=name, size=card['size'], k_params=sum(p.numel() for p in model.parameters()) / 1e3,
                   gflop=card['flops'] / 1e9, train_s=card['train_seconds'], steps=card['config']['steps'])
        for sname, (x, y) in sets.items():
            m = finder_metrics(lens_probability(model, card, x), y)
            row[sname] = {k: m[k] for k in ('auc', 'tpr0', 'tpr10', 'fpr_at_tpr75', 'n_lenses', 'n_nonlenses')}
        rows.append(row)
    for sname in sets:
        print(f"\n== {sname}")
        print(f"  {'model':30s} {'k par':>6s} {'GFLOP':>6s} {'train s':>8s}   {'AUC':>6s} {'TPR0':>5s} {'TPR10':>5s} {'FPR@.75':>8s}")
        for r in rows:
            m = r[sname]
            print(f"  {r['model']:30s} {r['k_params']:6.0f} {r['gflop']:6.3f} {r['train_s']:8d}   {m['auc']:.4f} "
                  f"{m['tpr0']:.3f} {m['tpr10']:.3f} {m['fpr_at_tpr75']:8.2e}")
    (args.out / 'summary.json').write_text(json.dumps(rows, indent=1) + '\n')
    print(f"\nwritten {args.out / 'summary.json'}")


if __name__ == '__main__':
    main()

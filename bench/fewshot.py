"""Few-shot lens search on lenstronomy-made images (issue 10): 10 lenstronomy-made lenses as the support set, scored on
1000 lenses among 10000 hard look-alikes made by lenstronomy (the held-out set of `bench/detect_reference.py`, kept
outside the repository), exactly as `slnb detect EMB.fits --support LENSES.fits` scores the embeddings `slnb embed` wrote of a file.

Targets: AUC >= 0.90, TPR10 >= 0.10 (mean over support sets drawn with different seeds).
Run: `python bench/fewshot.py [--k 10] [--draws 5] [--cube FILE] [--weights FOLDER]` (default: the embedder searches use,
fewshot-lsst-gri where shipped); writes bench/out/fewshot-<weights>.json.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

from slnb.detect import finder_metrics
from slnb.embed import embed_cube, write_embeddings
from slnb.fewshot import fewshot_detect
from slnb.io import make_cube, read_cube, write_cube
from slnb.reference import reference_lenses

OUT = Path(__file__).parent / 'out'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--k', default='5,10', help='support-set sizes')
    ap.add_argument('--draws', type=int, default=5, help='support sets per size, each from its own seed')
    ap.add_argument('--cube', type=Path, default=OUT / 'reference-lsst-gri-1000-10000-seed7.fits')
    ap.add_argument('--weights', default=None, help='an embedder weights folder (default: the shipped one)')
    args = ap.parse_args()
    if not args.cube.is_file(): raise SystemExit(f"no {args.cube}: make it with `python bench/detect_reference.py`")
    cube = read_cube(args.cube)
    truth = np.asarray(cube.catalog['is_lens'], bool)
    emb_file = OUT / (args.cube.stem + '-emb.fits')                     # embedded once, searched with every support set
    OUT.mkdir(exist_ok=True)
    t = time.perf_counter()
    ids, emb, folder = embed_cube(args.cube, args.weights, show_progress=False)
    write_embeddings(emb_file, ids, emb, json.loads((folder / 'card.json').read_text()), folder.name, args.cube)
    print(f"embedded {len(ids)} cutouts with {folder.name} in {time.perf_counter() - t:.0f} s")
    rows = []
    for k in (int(v) for v in args.k.split(',')):
        for d in range(args.draws):
            seed = 1000 + 10 * k + d                                    # never the set's own seed (7)
            noisy, _, _, _ = reference_lenses(k, 'LSST', 'g,r,i', seed, min_arc_snr=20, show_progress=False)
            sup = OUT / f'support-k{k}-seed{seed}.fits'
            write_cube(make_cube(noisy, 'LSST', 'g,r,i'), sup, overwrite=True)
            t = time.perf_counter()
            table, folder = fewshot_detect(emb_file, sup, weights=args.weights, show_progress=False)
            m = finder_metrics(np.asarray(table['p_lens']), truth)
            rows.append(dict(k=k, seed=seed, seconds=round(time.perf_counter() - t, 1), weights=folder.name, **m))
            print(f"k={k:3d} seed {seed}: AUC {m['auc']:.4f}  TPR0 {m['tpr0']:.3f}  TPR10 {m['tpr10']:.3f}  "
                  f"({rows[-1]['seconds']} s for {len(truth)} cutouts)", flush=True)
        sel = [r for r in rows if r['k'] == k]
        print(f"k={k}: AUC {np.mean([r['auc'] for r in sel]):.4f} +- {np.std([r['auc'] for r in sel]):.4f}, "
              f"TPR10 {np.mean([r['tpr10'] for r in sel]):.3f} +- {np.std([r['tpr10'] for r in sel]):.3f} "
              f"(targets for k = 10: AUC >= 0.90, TPR10 >= 0.10)")
    (OUT / f'fewshot-{folder.name}.json').write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()

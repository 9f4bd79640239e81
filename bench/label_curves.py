"""Learning curves of lens finding from few labels (issue 10): AUC and TPR10 against the number of labelled lenses
for a finder trained from scratch, a linear probe and a fine-tune of the self-supervised embedder, the few-shot
search, semi-supervised (FixMatch) training, and with the meta-trained embedder: the few-shot search, a fine-tune, a
linear probe, LP-FT (probe, then gentle fine-tune; with the probe, scored over the 8 orientations) and LP-FT with
FixMatch; on slnb's simulated test split and on lenstronomy-made lenses among hard look-alikes
(`bench/detect_reference.py` makes and keeps that set).

Each labelled set is n lenses and 10 n non-lenses (at most 4000) drawn from simulations (seeded); the unlabelled pool
is more simulations whose labels are never read. Targets: with 100 labels, the fine-tuned embedding or semi-supervised
training within 0.02 of the AUC of the fully supervised shipped finder (measured here on the same test sets).
Run: `python bench/label_curves.py [--labels 5,10,30,100,1000] [--steps 600] [--methods ...] [--out NAME]`; writes
bench/out/NAME.json and bench/out/NAME.png (NAME: label_curves). A recipe is chosen on validation sets, never on the
test sets: `--sim-seed 31 --reference bench/out/reference-lsst-gri-500-5000-seed11.fits --out val_label_curves`
(`python bench/detect_reference.py --n-lenses 500 --n-nonlenses 5000 --seed 11` makes that set). The 100-label
recipe so chosen: `--labels 100 --methods meta-lpft --steps 3000` (600, 1500, 3000 steps scored 0.9769, 0.9784, 0.9792
on the simulated validation set and 0.9795, 0.9801, 0.9808 on the lenstronomy one; 3000 steps with `--seed 1`
0.9804 / 0.9810; LP-FT with FixMatch, `meta-lpft-fixmatch`, 600 steps: 0.9747 / 0.9782).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from slnb.detect import (TrainingPool, augment, find_finder, finder_logits, finder_metrics, load_finder, validation_set)
from slnb.embed import embed_images, find_embedder, load_embedder, prototype_scores
from slnb.io import read_cube
from slnb.semisup import (LABEL_METHODS, LABEL_STEPS, DihedralAverage, LabelConfig, labelled_set, plot_label_curves,
                          probe_classifier, train_from_labels)
from slnb.surveys import get_survey

OUT = Path(__file__).parent / 'out'
METHODS = tuple(LABEL_METHODS)
TRAINED = ('scratch', 'finetune', 'fixmatch', 'meta-finetune', 'meta-lpft', 'meta-lpft-fixmatch')   # rows keep their steps
# every method but meta-* starts from the self-supervised embed-lsst-gri (no label read before the n given); meta-fewshot
# searches with, and meta-finetune fine-tunes, fewshot-lsst-gri, meta-trained on simulated kinds (simulations' labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--labels', default='5,10,30,100,1000')
    ap.add_argument('--methods', default=','.join(METHODS))
    ap.add_argument('--steps', type=int, default=LABEL_STEPS)
    ap.add_argument('--unlabelled', type=int, default=2, help='unlabelled cutouts per labelled one in a FixMatch batch')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--reference', type=Path, default=OUT / 'reference-lsst-gri-1000-10000-seed7.fits')
    ap.add_argument('--sim-seed', type=int, default=7, help="seed of the simulated set scored (7: slnb's test split; "
                    "another, with another --reference, makes a validation run to choose a recipe on)")
    ap.add_argument('--out', default='label_curves', help='name of the JSON and PNG written in bench/out')
    args = ap.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    bands = get_survey('LSST').select('g,r,i')
    labels = [int(v) for v in args.labels.split(',')]
    methods = args.methods.split(',')
    t0 = time.perf_counter()
    pool = TrainingPool(bands, 8192, 100 + args.seed, lens_fraction=0.5, show_progress=False)        # where labels come from
    unlab = (TrainingPool(bands, 8192, 200 + args.seed, lens_fraction=0.3, show_progress=False)     # labels never read
             if any('fixmatch' in m for m in methods) else None)
    sim_x, sim_y, _ = validation_set(bands, 4096, args.sim_seed)          # default: slnb's test split (seed 7, not trained on)
    tests = {'simulated': (sim_x, sim_y)}
    if args.reference.is_file():
        ref = read_cube(args.reference)
        tests['lenstronomy'] = (ref.images, np.asarray(ref.catalog['is_lens'], bool))
    else: print(f"no {args.reference}: run bench/detect_reference.py first; the lenstronomy set is left out")
    print(f"data ready in {time.perf_counter() - t0:.0f} s")
    fmodel, fcard = load_finder(find_finder('LSST', 'g,r,i'))
    sigma = torch.tensor(fcard['noise_sigma'])
    emodel, ecard = load_embedder(find_embedder('LSST', 'g,r,i', stages=('embed',)))   # self-supervised: no labels
    test_emb = {k: embed_images(emodel, ecard, x) for k, (x, _) in tests.items()}
    if any(m.startswith('meta') for m in methods):
        mmodel, mcard = load_embedder(find_embedder('LSST', 'g,r,i', stages=('fewshot',)))
        meta_emb = {k: embed_images(mmodel, mcard, x) for k, (x, _) in tests.items()}
    rows = [dict(method='shipped finder (fully supervised)', n=None,
                 **{k: finder_metrics(finder_logits(fmodel, x, sigma), y) for k, (x, y) in tests.items()})]
    print(rows[-1])
    for n in labels:
        data = labelled_set(pool, n, min(10 * n, 4000), args.seed + n)
        for m in methods:
            t = time.perf_counter()
            if m in ('meta-probe', 'meta-lpft', 'meta-lpft-fixmatch'):    # mean over 8 orientations (with the probe: WiSE-FT)
                if m.startswith('meta-lpft'):
                    cfg = LabelConfig(init='lpft', unlabelled=args.unlabelled if 'fixmatch' in m else 0, steps=args.steps,
                                      seed=args.seed)
                    model, log = train_from_labels(data, cfg, bands, unlab, mmodel)
                    model = DihedralAverage(log['probe'], model)
                else: model = DihedralAverage(probe_classifier(mmodel, data, bands, args.seed))
                score = lambda k, x, model=model: finder_logits(model, x, sigma, compile=False)
            elif m in ('scratch', 'finetune', 'fixmatch', 'meta-finetune'):
                cfg = LabelConfig(init='embed' if 'finetune' in m else 'scratch', unlabelled=args.unlabelled if m == 'fixmatch' else 0,
                                  steps=args.steps, seed=args.seed)
                model, _ = train_from_labels(data, cfg, bands, unlab, mmodel if m == 'meta-finetune' else emodel)
                score = lambda k, x: finder_logits(model, x, sigma)
            elif m == 'probe':                   # the probe's head on the test sets' embeddings (computed once)
                head = probe_classifier(emodel, data, bands, args.seed, C=1.0).head
                score = lambda k, x, head=head: test_emb[k] @ head.weight[0].detach().numpy() + head.bias.item()
            else:                   # few-shot: the n labelled lenses are the support set
                gen = torch.Generator().manual_seed(args.seed)
                em, ec, embs = (mmodel, mcard, meta_emb) if m == 'meta-fewshot' else (emodel, ecard, test_emb)
                sup = embed_images(em, ec, augment(data.clean[data.label > 0.5], bands, gen).numpy())
                score = lambda k, x, sup=sup, embs=embs: prototype_scores(embs[k], sup)
            rows.append(dict(method=m, n=n, seconds=round(time.perf_counter() - t),
                             **({'steps': args.steps} if m in TRAINED else {}),
                             **{k: finder_metrics(score(k, x), y) for k, (x, y) in tests.items()}))
            print(f"n={n:5d} {m:18s} " + '  '.join(f"{k}: AUC {v['auc']:.4f} TPR10 {v['tpr10']:.3f}" for k, v in rows[-1].items()
                                                   if isinstance(v, dict)) + f"  ({rows[-1]['seconds']} s)", flush=True)
            OUT.mkdir(exist_ok=True); (OUT / f'{args.out}.json').write_text(json.dumps(rows, indent=1))
    import matplotlib; matplotlib.use('Agg')
    plot_label_curves(rows, list(tests)).savefig(OUT / f'{args.out}.png', dpi=110)


if __name__ == '__main__':
    main()

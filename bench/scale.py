"""Scaling the search past one machine: cutouts/s of lens finding with one process (no Dask) and with 1 and 2 Dask
worker processes on this machine (each single-threaded, as Dask's nanny sets them), the fit's seconds per lens from
bench/fit.py, and the CPU time for a survey of 10^10 objects. Writes bench/out/scale.json.

    python bench/scale.py [--n 4096] [--chunk 512]
"""
import argparse, json, tempfile, time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / 'out'


def rate(fn, n: int) -> tuple[float, np.ndarray]:
    "Cutouts/s of fn() over n cutouts (one warm-up call first), and its result."
    fn()
    t = time.perf_counter(); p = fn(); dt = time.perf_counter() - t
    return n / dt, p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=4096); ap.add_argument('--chunk', type=int, default=512)
    args = ap.parse_args()
    from dask.distributed import LocalCluster
    from slnb.detect import _band_order, _score_on_dask, find_finder, lens_probability, load_finder
    from slnb.io import write_cube
    from slnb.simulate import simulate_cube
    base = simulate_cube(256, 'LSST', 'g,r,i', seed=11, show_progress=False)
    reps = -(-args.n // len(base))
    base.images = np.tile(base.images, (reps, 1, 1, 1))[:args.n]
    base.catalog = None
    from astropy.table import Table
    base.catalog = Table({'id': np.arange(args.n, dtype=np.int64)})
    folder = find_finder('LSST', 'g,r,i')
    model, card = load_finder(folder, 'cpu')
    order = _band_order(card, 'LSST', ['g', 'r', 'i'], 'bench')
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'cube.fits'
        write_cube(base, path)
        r0, p0 = rate(lambda: lens_probability(model, card, base.images[:, order], 256, 'cpu'), args.n)
        rows['one_process'] = r0
        print(f"one process (torch's own threads): {r0:.0f} cutouts/s", flush=True)
        for w in (1, 2):
            with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, host='127.0.0.1', dashboard_address=None) as cl:
                r, p = rate(lambda: _score_on_dask(path, folder, order, args.n, cl.scheduler_address, 256, args.chunk), args.n)
            rows[f'dask_{w}_workers'] = r
            print(f"Dask, {w} worker process(es) on 127.0.0.1: {r:.0f} cutouts/s ({r / r0:.2f}x one process); "
                  f"max |p - p_one_process| = {np.abs(p - p0).max():.1e}", flush=True)
    fit = json.loads((OUT / 'fit.json').read_text())['summary'] if (OUT / 'fit.json').is_file() else {}
    fit_s = fit.get('median_seconds_cnn', float('nan'))
    per_core = rows['dask_2_workers'] / 2
    n_obj, n_fit = 1e10, 1e5          # objects searched; candidates modelled (~3e4 lenses and the false positives)
    sizing = dict(detect_core_hours=n_obj / per_core / 3600, fit_core_hours=n_fit * fit_s / 3600 * 2,   # a fit uses 2 cores
                  per_core_cutouts_s=per_core, fit_seconds_2_cores=fit_s)
    print(f"10^10 cutouts at {per_core:.0f} cutouts/s per core: {sizing['detect_core_hours']:.3g} core-hours of finding; "
          f"10^5 fits at {fit_s:.0f} s on 2 cores: {sizing['fit_core_hours']:.3g} core-hours", flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / 'scale.json').write_text(json.dumps(dict(n=args.n, chunk=args.chunk, rates=rows, sizing=sizing), indent=1))


if __name__ == '__main__':
    main()

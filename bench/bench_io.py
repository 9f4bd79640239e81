"""Cutout-cube write + validated read throughput, against a bare `numpy.save`/`load` of the same array measured in
the same run (the ratio is the cost of FITS, checksums and validation). Run: `make bench`."""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from slnb.io import make_cube, read_cube, write_cube


def main(n: int = 2000, size: int = 64):
    imgs = np.random.default_rng(0).normal(0, 1, (n, 3, size, size)).astype(np.float32)
    cube = make_cube(imgs, 'LSST', 'g,r,i')
    mb = imgs.nbytes / 2 ** 20
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter(); write_cube(cube, Path(tmp)/'c.fits'); read_cube(Path(tmp)/'c.fits')
        t_cube = time.perf_counter() - t0
        t0 = time.perf_counter(); np.save(Path(tmp)/'c.npy', imgs); np.load(Path(tmp)/'c.npy')
        t_npy = time.perf_counter() - t0
    print(f"cube of {n} x 3 x {size}x{size} ({mb:.0f} MB): write+read {t_cube:.2f} s ({2 * mb / t_cube:.0f} MB/s), "
          f"numpy save+load {t_npy:.2f} s; ratio x{t_cube / t_npy:.1f}")


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)

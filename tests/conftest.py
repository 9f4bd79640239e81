"Shared fixtures: small cubes, the real data (skipped with a reason where absent), a scratch settings file."
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from slnb.core import PARAM_NAMES, real_data_path
from slnb.io import make_cube, write_cube
from slnb.surveys import get_survey


@pytest.fixture
def real_data():
    "The shared real-data folder, or skip."
    p = real_data_path()
    if p is None or not (p/'README.md').exists():
        pytest.skip("shared real data not found (set SLNB_REAL_DATA to ../shared/data/real)")
    return p


def lens_catalog(n: int, rng) -> Table:
    "A truth catalogue with half lenses, half non-lenses."
    cat = Table({'id': np.arange(100, 100 + n, dtype=np.int64), 'is_lens': (np.arange(n) % 2 == 0).astype(np.int16)})
    for p in PARAM_NAMES:
        cat[p] = np.where(cat['is_lens'] == 1, rng.uniform(0.5, 2.0, n), np.nan)
    return cat


@pytest.fixture
def cube():
    "A valid 6-cutout LSST g,r,i cube with PSF, VARIANCE and MASK extensions and a truth catalogue."
    rng = np.random.default_rng(5)
    imgs = rng.normal(0, 0.05, (6, 3, 25, 25)).astype(np.float32)
    bands = get_survey('LSST').select('g,r,i')
    psf = np.stack([b.psf_kernel(15) for b in bands]).astype(np.float32)
    return make_cube(imgs, 'LSST', 'g,r,i', catalog=lens_catalog(6, rng), PSF=psf,
                     VARIANCE=np.full(imgs.shape, 0.0025, np.float32), MASK=np.zeros(imgs.shape, np.uint8))


@pytest.fixture
def cube_file(cube, tmp_path) -> Path:
    return write_cube(cube, tmp_path/'cube.fits')

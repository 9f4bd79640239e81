"Deblending: the shipped deblender on lenstronomy-made lenses and look-alikes, `slnb deblend` (extensions, MASK, sums)."
import numpy as np
import pytest

from slnb.cli import main
from slnb.deblend import arcs_relative_l2, deblend_images, find_deblender, load_deblender, neighbour_mask, to_survey_pixels
from slnb.detect import NoWeightsError


@pytest.fixture(scope='module')
def shipped():
    try: return load_deblender(find_deblender('LSST', 'g,r,i'))
    except NoWeightsError as e: pytest.skip(str(e))


def test_shipped_deblender_recovers_lenstronomy_arcs(shipped):
    from slnb.reference import reference_lenses
    model, card = shipped
    noisy, clean, arcs, cat = reference_lenses(24, 'LSST', 'g,r,i', seed=6, show_progress=False)
    lens_light, arcs_hat = deblend_images(model, card, noisy)
    err = arcs_relative_l2(arcs_hat, arcs)
    assert np.median(err) <= 0.30
    assert np.median(arcs_relative_l2(lens_light, clean - arcs)) < 0.1
    # better than subtracting the true lens light from the noisy image, where noise dominates the arcs
    faint = np.asarray(cat['arc_snr']) < 200
    assert np.median(err[faint]) < np.median(arcs_relative_l2(noisy - (clean - arcs), arcs)[faint])


def test_lone_ellipticals_get_almost_no_arcs(shipped):
    from slnb.reference import reference_set
    model, card = shipped
    ell = reference_set(0, 16, seed=3, nonlens_mix={'elliptical': 1.0}, show_progress=False)
    lens_light, arcs = deblend_images(model, card, ell.images)
    frac = arcs.sum((1, 2, 3)) / (lens_light + arcs).sum((1, 2, 3))
    assert np.median(np.abs(frac)) < 0.03


def test_slnb_deblend_adds_parts_that_sum_to_denoised_and_masks_neighbours(shipped, tmp_path):
    from slnb.io import make_cube, read_cube, write_cube
    from slnb.surveys import get_survey
    rng = np.random.default_rng(8)
    sig = np.array([b.background_sigma for b in get_survey('LSST').select('g,r,i')])
    yy, xx = np.mgrid[:48, :48]
    blob = lambda x0, y0, a, w: a * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * w ** 2))
    img = (blob(23.5, 23.5, 40, 3) + blob(42, 40, 25, 1.5))[None, None] * sig[None, :, None, None]
    img = (img + rng.normal(0, 1, (2, 3, 48, 48)) * sig[None, :, None, None]).astype(np.float32)
    cube = make_cube(img, 'LSST', 'g,r,i', VARIANCE=np.broadcast_to(sig[None, :, None, None] ** 2, img.shape).astype(np.float32))
    cube.extensions['DENOISED'] = img.copy()
    write_cube(cube, tmp_path / 'in.fits')
    assert main(['deblend', str(tmp_path / 'in.fits'), '--mask', '-o', str(tmp_path / 'out.fits')]) == 0
    out = read_cube(tmp_path / 'out.fits')
    assert {'VARIANCE', 'DENOISED', 'LENS_LIGHT', 'ARCS', 'MASK'} <= set(out.extensions)
    assert np.allclose(out.extensions['LENS_LIGHT'] + out.extensions['ARCS'], img, atol=1e-4 * img.max())
    m = out.extensions['MASK']
    assert m[0, :, 40, 42].all() and not m[0, :, 24, 24].any()      # the neighbour masked, the galaxy not
    assert out.header['DEBLENDR'] == 'deblend-lsst-gri'


def test_to_survey_pixels_sums_blocks_and_matches_the_noise():
    rng = np.random.default_rng(1)
    rms = np.full((2, 40, 40), 3.0); rms[0, 0, 0] = 1e16                 # one flagged pixel
    x = rng.normal(0, 3.0, (2, 40, 40))
    y = to_survey_pixels(x, rms, 2, [0.5, 1.0])
    assert y.shape == (2, 20, 20) and np.isnan(y[0, 0, 0]) and np.isfinite(y[1]).all()
    assert np.nanstd(y[0]) == pytest.approx(0.5, rel=0.1) and np.std(y[1]) == pytest.approx(1.0, rel=0.1)
    assert y[1, 3, 4] == pytest.approx(x[1, 6:8, 8:10].sum() / 6.0, rel=1e-5)     # a 2x2 sum, scaled: 1 / (2 x 3)


def test_neighbour_mask_of_an_empty_cutout_is_empty():
    assert neighbour_mask(np.zeros((3, 32, 32)), [1.0] * 3, 0.2).sum() == 0

"""CNN lens modelling: parameter conventions against lenstronomy, the likelihood, calibration, the shipped LSST
predictor on lenstronomy-made lenses, and `slnb predict`."""
import math

import numpy as np
import pytest
import torch

from slnb.cli import main
from slnb.core import PARAM_NAMES
from slnb.detect import NoWeightsError, dihedral_each
from slnb.predict import (central_cutouts, coverage, covariance, dihedral_parameters, find_predictor, gaussian_head,
                          gaussian_nll, interval_scale, load_predictor, predict_cube, predict_parameters,
                          prediction_metrics, predictor_inputs, shift_parameters)


def lenstronomy_sie(p, src, num_pix=40, scale=0.1):
    "A lenstronomy image (no PSF) of an SIE + shear lens with parameters p (7,) and a Sérsic source at offset src (x, y, e1, e2)."
    from lenstronomy.Data.imaging_data import ImageData
    from lenstronomy.Data.psf import PSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel
    import lenstronomy.Util.simulation_util as sim_util
    im = ImageModel(ImageData(**sim_util.data_configure_simple(num_pix, scale, 100, 1)), PSF('NONE'),
                    lens_model_class=LensModel(['SIE', 'SHEAR']), source_model_class=LightModel(['SERSIC_ELLIPSE']))
    return im.image([dict(theta_E=p[0], e1=p[1], e2=p[2], center_x=p[5], center_y=p[6]), dict(gamma1=p[3], gamma2=p[4], ra_0=p[5], dec_0=p[6])],
                    [dict(amp=10, R_sersic=0.2, n_sersic=1, e1=src[2], e2=src[3], center_x=p[5] + src[0], center_y=p[6] + src[1])])


@pytest.mark.parametrize('k', range(8))
def test_turned_image_is_lenstronomys_image_of_the_turned_parameters(k):
    p = torch.tensor([[1.0, 0.12, -0.07, 0.03, -0.04, 0.15, -0.1]], dtype=torch.float64)
    s = torch.tensor([[1, 0.1, -0.05, 0, 0, 0.06, 0.03]], dtype=torch.float64)       # the source, as a 'lens' to turn
    img = torch.as_tensor(lenstronomy_sie(p[0].tolist(), [0.06, 0.03, 0.1, -0.05]))[None, None]
    turned = dihedral_each(img, torch.tensor([k]))[0, 0].numpy()
    pk, sk = dihedral_parameters(p, torch.tensor([k]))[0], dihedral_parameters(s, torch.tensor([k]))[0]
    ref = lenstronomy_sie(pk.tolist(), [float(sk[5]), float(sk[6]), float(sk[1]), float(sk[2])])
    assert np.abs(turned - ref).max() < 1e-6 * np.abs(ref).max()
    if k in (1, 3): assert float(pk[1]) == pytest.approx(-0.12) and float(pk[3]) == pytest.approx(-0.03)


def test_shifted_parameters_move_the_image_by_the_same_pixels():
    p = [1.0, 0.1, 0.05, 0.0, 0.02, 0.0, 0.0]
    moved = shift_parameters(torch.tensor([p]), torch.tensor([[2.0, -1.0]]), 0.1)[0].tolist()
    a, b = lenstronomy_sie(p, [0.05, 0, 0, 0]), lenstronomy_sie(moved, [0.05, 0, 0, 0])
    assert np.allclose(b[:-1, 2:], a[1:, :-2], atol=1e-9 * np.abs(a).max())       # +2 columns (x), -1 row (y)


def test_gaussian_nll_is_the_full_covariance_likelihood():
    from scipy.stats import multivariate_normal
    g = torch.Generator().manual_seed(1)
    raw, y = torch.randn(5, 35, generator=g) * 0.4, torch.randn(5, 7, generator=g)
    mu, L = gaussian_head(raw)
    C = covariance(L).double().numpy()
    ref = np.mean([-multivariate_normal(mu[i].numpy(), C[i]).logpdf(y[i].numpy()) for i in range(5)])
    assert float(gaussian_nll(raw, y)) + 3.5 * math.log(2 * math.pi) == pytest.approx(ref, rel=1e-4)


def test_interval_scale_makes_68_percent_intervals():
    z = np.random.default_rng(0).normal(0, 2.0, (20000, 7)) * np.arange(1, 8)
    f = interval_scale(z)
    assert np.allclose(f, 2.0 * np.arange(1, 8), rtol=0.05)
    assert np.allclose(coverage(z / f), 0.6827, atol=0.01) and np.allclose(coverage(z / f, 1.96), 0.95, atol=0.01)


def test_central_cutouts_and_their_offset():
    x = np.zeros((1, 1, 67, 70))
    c, off = central_cutouts(x, 64, 0.2)
    assert c.shape == (1, 1, 64, 64)
    assert np.allclose(off, [0.0, -0.1])            # 70 - 64 even: no offset in x; 67 - 64 odd: half a pixel in y
    with pytest.raises(ValueError, match='needs at least 64x64'): central_cutouts(np.zeros((1, 1, 48, 48)), 64, 0.2)


@pytest.fixture(scope='module')
def shipped():
    try: return load_predictor(find_predictor('LSST', 'g,r,i'))
    except NoWeightsError as e: pytest.skip(str(e))


@pytest.fixture(scope='module')
def lenses():
    from slnb.reference import reference_lenses
    noisy, _, _, cat = reference_lenses(64, 'LSST', 'g,r,i', seed=12, min_arc_snr=20, show_progress=False)
    return noisy, np.stack([np.asarray(cat[p], float) for p in PARAM_NAMES], 1)


def test_shipped_predictor_models_lenstronomy_lenses(shipped, lenses):
    model, card = shipped
    noisy, truth = lenses
    pred = predict_parameters(model, card, noisy)
    m = prediction_metrics(pred, truth)
    assert m['theta_E_median_rel_error'] < 0.055                # the target (3%) is measured on 1000 in bench/predict.py
    assert abs(m['theta_E_median_bias']) < 0.03
    assert m['rms']['center_x'] < 0.1 and m['rms']['center_y'] < 0.1
    assert all(0.45 <= c <= 0.9 for c in m['coverage68'])       # 64 lenses: +-0.12 is ~2 sigma of binomial scatter
    assert np.all(pred['std'] > 0) and np.all(np.linalg.eigvalsh(pred['cov']) > 0)


def test_predictions_turn_and_move_with_the_image(shipped, lenses):
    model, card = shipped
    noisy = lenses[0][:32]
    base = predict_parameters(model, card, noisy)
    for k in (1, 4, 6):
        turned = dihedral_each(torch.as_tensor(noisy), torch.full((32,), k)).numpy()
        pk = predict_parameters(model, card, turned)
        expect = dihedral_parameters(torch.as_tensor(base['mean']), torch.full((32,), k)).numpy()
        dz = np.abs(pk['mean'] - expect) / base['std']
        assert np.median(dz) < 0.5, (k, np.median(dz, 0))       # the same lens, turned: the same model, turned
    # one row up (+y), one column left (-x): within the +-2 pixels of the training shifts
    moved = predict_parameters(model, card, np.roll(noisy, (1, -1), axis=(-2, -1)))
    shift = np.median(moved['mean'][:, 5:7] - base['mean'][:, 5:7], 0)
    assert np.allclose(shift, [-0.2, 0.2], atol=0.02)


def test_slnb_predict_writes_a_spec_catalogue(shipped, tmp_path, capsys):
    from slnb.io import read_catalog, write_cube
    from slnb.simulate import simulate_cube
    cube = simulate_cube(6, 'LSST', 'g,r,i', lens_fraction=1.0, seed=4, num_pix=70, show_progress=False)
    write_cube(cube, tmp_path / 'c.fits')
    assert main(['predict', str(tmp_path / 'c.fits'), '-o', str(tmp_path / 'p.ecsv')]) == 0
    t = read_catalog(tmp_path / 'p.ecsv', 'prediction')
    assert list(t['id']) == list(cube.catalog['id']) and t.meta['weights'] == 'predict-lsst-gri'
    assert t['cov'].shape == (6, 7, 7) and np.all(t['theta_E_std'] > 0)
    lens = np.asarray(cube.catalog['arc_snr']) >= 20
    assert lens.any() and np.median(np.abs(t['theta_E'][lens] / cube.catalog['theta_E'][lens] - 1)) < 0.15
    # errors: too small cutouts, bands without weights, a bad --mc-dropout
    write_cube(simulate_cube(2, 'LSST', 'g,r,i', seed=4, num_pix=48, show_progress=False), tmp_path / 's.fits')
    assert main(['predict', str(tmp_path / 's.fits'), '-o', str(tmp_path / 's.ecsv')]) == 2
    assert 'needs at least 64x64' in capsys.readouterr().err
    write_cube(simulate_cube(2, 'Euclid', 'VIS', seed=4, show_progress=False), tmp_path / 'e.fits')
    assert main(['predict', str(tmp_path / 'e.fits'), '-o', str(tmp_path / 'e.ecsv')]) == 2
    assert 'no predict weights for Euclid' in capsys.readouterr().err
    assert main(['predict', str(tmp_path / 'c.fits'), '-o', str(tmp_path / 'q.ecsv'), '--mc-dropout', '1']) == 2


def test_predictor_inputs_put_the_arcs_beside_the_image():
    x = np.ones((2, 3, 8, 8), np.float32)
    assert predictor_inputs(dict(inputs='image'), x) is x and predictor_inputs({}, x) is x      # older cards: image only
    both = predictor_inputs(dict(inputs='image+arcs'), x, 2 * x)
    assert both.shape == (2, 6, 8, 8) and np.all(both[:, :3] == 1) and np.all(both[:, 3:] == 2)
    with pytest.raises(ValueError, match='must match'): predictor_inputs(dict(inputs='image+arcs'), x, x[:, :2])
    with pytest.raises(ValueError, match="unknown predictor inputs 'arcs'"): predictor_inputs(dict(inputs='arcs'), x)


def test_predict_cube_reads_the_cubes_arcs(shipped, tmp_path):
    "A cube deblended by the pipeline gives the same predictions as one the predictor deblends itself; other ARCS change them."
    from slnb.deblend import deblend_cube
    from slnb.io import write_cube
    from slnb.simulate import simulate_cube
    model, card = shipped
    if card.get('inputs') != 'image+arcs': pytest.skip('the shipped predictor reads the image alone')
    cube = simulate_cube(8, 'LSST', 'g,r,i', lens_fraction=1.0, seed=5, show_progress=False)
    write_cube(cube, tmp_path / 'raw.fits')
    own = predict_cube(tmp_path / 'raw.fits', show_progress=False)[0]
    write_cube(deblend_cube(cube, show_progress=False)[0], tmp_path / 'deb.fits')
    given = predict_cube(tmp_path / 'deb.fits', show_progress=False)[0]
    assert np.allclose(own['theta_E'], given['theta_E'], rtol=1e-4)
    cube.extensions['ARCS'] = np.zeros_like(cube.images); cube.header['DEBLENDR'] = 'deblend-other'
    write_cube(cube, tmp_path / 'zero.fits')
    with pytest.warns(UserWarning, match='ARCS are from deblend-other'):
        blind = predict_cube(tmp_path / 'zero.fits', show_progress=False)[0]
    assert np.median(np.abs(blind['theta_E'] / own['theta_E'] - 1)) > 0.02

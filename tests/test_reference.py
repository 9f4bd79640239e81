"Reference sets made by lenstronomy alone: the same physics as slnb's renderer, reproducible, and the shipped finder on them."
import numpy as np
import pytest
import torch

from slnb.detect import finder_metrics, lens_probability, load_finder, weights_root
from slnb.reference import lenstronomy_terms, reference_set, render_reference
from slnb.render import Renderer, noise_variance, random_sersic_lenses
from slnb.surveys import get_survey


def test_lenstronomy_images_agree_with_slnb_renderer():
    sc = random_sersic_lenses(5, 3, 3)
    noisy, clean, arcs = render_reference(sc, 'LSST', ['g', 'r', 'i'], supersample=3, seed=1, show_progress=False)
    bands = get_survey('LSST').select('g,r,i')
    ours = Renderer(bands, 64, 3, 1.0).noiseless(sc.to()).numpy()
    rel = np.sqrt(((ours - clean) ** 2).sum((-2, -1)) / (clean ** 2).sum((-2, -1)))
    assert rel.max() < 2e-3
    assert (arcs.sum((-2, -1)) > 0).all() and (arcs.sum((-2, -1)) < clean.sum((-2, -1))).all()   # arcs: part of the light
    var = noise_variance(torch.as_tensor(clean), bands).numpy()   # slnb's sky + read + Poisson variance of the survey
    assert ((noisy - clean) / np.sqrt(var)).std() == pytest.approx(1.0, abs=0.03)   # lenstronomy's noise: the same


def test_a_star_is_a_point_source_and_a_ring_a_closed_string_of_knots():
    sc = random_sersic_lenses(1, 1, 0)
    sc.amp[:] = 0; sc.amp[0, 0, 0] = 5.0
    sc.light['ring_radius'][0, 0] = 1.2; sc.light['R_sersic'][0, 0] = 0.15; sc.light['n_sersic'][0, 0] = 0.5
    sc.point_xy, sc.point_flux = torch.tensor([[[0.4, -0.2]]]), torch.tensor([[[7.0]]])
    t = lenstronomy_terms(sc, 0, 0)
    xy = np.array([[k['center_x'], k['center_y']] for k in t['kwargs_lens_light']])
    r = np.hypot(*(xy - [sc.light['center_x'][0, 0].item(), sc.light['center_y'][0, 0].item()]).T)
    assert len(xy) >= 12 and 0.8 < r.min() and r.max() < 1.8 and not t['kwargs_source']
    assert t['kwargs_ps'] == [dict(ra_image=[pytest.approx(0.4)], dec_image=[pytest.approx(-0.2)], point_amp=[7.0])]
    sc.amp[:] = 0                                                  # the star alone: its image holds its flux
    _, clean, _ = render_reference(sc, 'LSST', ['r'], supersample=1, show_progress=False)
    assert clean.sum() == pytest.approx(7.0, rel=0.01)
    row, col = np.unravel_index(clean[0, 0].argmax(), clean.shape[-2:])
    assert (col - 31.5) * 0.2 == pytest.approx(0.4, abs=0.15) and (row - 31.5) * 0.2 == pytest.approx(-0.2, abs=0.15)


def test_reference_set_is_reproducible_and_labelled():
    a = reference_set(4, 8, seed=3, num_pix=48, supersample=1, show_progress=False)
    b = reference_set(4, 8, seed=3, num_pix=48, supersample=1, show_progress=False)
    assert np.array_equal(a.images, b.images) and a.images.shape == (12, 3, 48, 48)
    lens = np.asarray(a.catalog['is_lens']) == 1
    assert lens.sum() == 4 and (np.asarray(a.catalog['arc_snr'])[lens] >= 10).all()
    assert a.header['REFERENC'] == 'lenstronomy' and 'lens_single' not in set(a.catalog['kind'])


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match='no configuration'): reference_set(2, 2, survey='CSST', show_progress=False)
    with pytest.raises(ValueError, match='n_lenses'): reference_set(-1, 5, show_progress=False)


def test_shipped_finder_separates_lenstronomy_lenses_from_lookalikes():
    folder = weights_root() / 'detect-lsst-gri'
    if not (folder / 'card.json').is_file(): pytest.skip(f'no shipped weights in {folder}')
    ref = reference_set(40, 200, seed=11, show_progress=False)
    model, card = load_finder(folder)
    m = finder_metrics(lens_probability(model, card, ref.images), np.asarray(ref.catalog['is_lens']) == 1)
    assert m['auc'] >= 0.97 and m['tpr10'] >= 0.5

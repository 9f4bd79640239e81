"Detection: the challenge's metrics, the finder's training and weights, `slnb detect` (local, on Dask, on bad input)."
import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from slnb.cli import main
from slnb.detect import (finder_metrics, fit_temperature, load_finder, roc_auc, roc_curve, tpr_at_false_positives)


def test_auc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.2
    s = rng.normal(1.5 * y, 1.0)
    assert roc_auc(s, y) == pytest.approx((s[y][:, None] > s[~y][None, :]).mean(), abs=1e-12)
    fpr, tpr, _ = roc_curve(s, y)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(s, y), abs=1e-12)


def test_tpr0_and_tpr10_follow_metcalf_2019():
    # 10 lenses scored 10..19; 20 non-lenses, the best at 14.5, the tenth best at 9.5
    lenses, nonlenses = np.arange(10, 20.0), np.r_[14.5, np.linspace(0, 9.5, 19)]
    s, y = np.r_[lenses, nonlenses], np.r_[np.ones(10), np.zeros(20)]
    assert tpr_at_false_positives(s, y, 0) == 0.5             # 15..19 beat every non-lens
    assert tpr_at_false_positives(s, y, 9) == 1.0             # all ten beat the tenth-highest non-lens
    m = finder_metrics(s, y)
    assert (m['tpr0'], m['tpr10'], m['n_lenses'], m['n_nonlenses']) == (0.5, 1.0, 10, 20)


def test_temperature_calibrates_overconfident_logits():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, 20000)                                  # calibrated logits
    labels = rng.random(z.size) < 1 / (1 + np.exp(-z))          # labels drawn from their probabilities
    assert fit_temperature(3 * z, labels) == pytest.approx(3.0, rel=0.1)   # three times over-confident: T = 3


@pytest.fixture(scope='module')
def quick_finder(tmp_path_factory):
    "A finder trained for a few steps through `slnb train`, and a small simulated LSST cube."
    d = tmp_path_factory.mktemp('finder')
    assert main(['train', 'detect-lsst-gri', '--steps', '3', '--seed', '4', '--out', str(d)]) == 0
    assert main(['simulate', '--n', '10', '--seed', '2', '-o', str(d / 'cube.fits')]) == 0
    return d / 'detect-lsst-gri', d / 'cube.fits'


def test_train_writes_weights_with_a_card(quick_finder):
    folder, _ = quick_finder
    card = json.loads((folder / 'card.json').read_text())
    assert card['survey'] == 'LSST' and card['bands'] == ['g', 'r', 'i'] and card['config']['seed'] == 4
    assert {'auc', 'tpr0', 'tpr10', 'fpr_at_tpr75'} <= set(card['metrics']['validation'])
    assert card['slnb_version'] and card['temperature'] > 0
    model, _ = load_finder(folder)                               # weights_only load
    assert sum(p.numel() for p in model.parameters()) > 1000


def test_detect_writes_probabilities(quick_finder, tmp_path, capsys):
    folder, cube = quick_finder
    out = tmp_path / 'det.ecsv'
    assert main(['detect', str(cube), '--weights', str(folder), '--batch', '4', '-o', str(out)]) == 0
    t = Table.read(out)
    assert list(t['id']) == list(fits.getdata(cube, 'CATALOG')['id'])
    assert np.all((t['p_lens'] >= 0) & (t['p_lens'] <= 1)) and t.meta['weights'] == 'detect-lsst-gri'


def test_detect_on_dask_gives_the_local_scores(quick_finder, tmp_path):
    from dask.distributed import LocalCluster
    folder, cube = quick_finder
    assert main(['detect', str(cube), '--weights', str(folder), '-o', str(tmp_path / 'local.ecsv')]) == 0
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert main(['detect', str(cube), '--weights', str(folder), '--scheduler', cluster.scheduler_address,
                     '-o', str(tmp_path / 'dask.ecsv')]) == 0
    a, b = Table.read(tmp_path / 'local.ecsv'), Table.read(tmp_path / 'dask.ecsv')
    assert np.allclose(a['p_lens'], b['p_lens'], atol=1e-6)


def test_nan_holed_cutouts_are_scored(quick_finder, tmp_path):
    folder, cube = quick_finder
    holed = tmp_path / 'holed.fits'
    with fits.open(cube) as hl:
        hl[0].data[3, :, :20, :] = np.nan                        # the edge of a field
        hl.writeto(holed, checksum=True)
    with pytest.warns(UserWarning, match='NaN'):
        assert main(['detect', str(holed), '--weights', str(folder), '-o', str(tmp_path / 'h.ecsv')]) == 0
    assert np.isfinite(Table.read(tmp_path / 'h.ecsv')['p_lens']).all()


def test_cube_without_weights_is_refused_clearly(quick_finder, tmp_path, capsys):
    folder, _ = quick_finder
    assert main(['simulate', '--survey', 'CSST', '--n', '2', '-o', str(tmp_path / 'csst.fits')]) == 0
    assert main(['detect', str(tmp_path / 'csst.fits'), '--weights', str(folder), '-o', str(tmp_path / 'x.ecsv')]) == 2
    err = capsys.readouterr().err
    assert 'the finder is for LSST, the cube is CSST' in err and 'Traceback' not in err
    ini = tmp_path / 'settings.ini'
    ini.write_text(f'[paths]\nweights = {tmp_path / "empty"}\n')
    assert main(['--settings', str(ini), 'detect', str(tmp_path / 'csst.fits'), '-o', str(tmp_path / 'y.ecsv')]) == 2
    err = capsys.readouterr().err
    assert 'no lens-finder weights for CSST g,r,i' in err and 'shipped: none' in err


def test_noise_matched_cutouts_scale_the_sky_and_refuse_empty_images():
    from slnb.detect import noise_matched_cutouts
    img = np.random.default_rng(3).normal(10.0, 4.0, (120, 120))
    rms = np.ones_like(img); rms[:, :5] = 1e16                  # flagged columns
    cut = noise_matched_cutouts(img, [(60, 60), (2, 2)], 64, 0.25, rms)
    assert cut.shape == (2, 1, 64, 64) and np.nanstd(cut[0]) == pytest.approx(0.25, rel=0.05)
    assert abs(np.nanmean(cut[0])) < 0.01                       # sky subtracted
    assert np.isnan(cut[1, 0, :30, :30]).all()                   # off the image and flagged: NaN
    with pytest.raises(ValueError, match='good pixels'): noise_matched_cutouts(np.full((50, 50), np.nan), [(25, 25)], 32, 1.0)


def test_shipped_euclid_finder_ranks_real_q1_lenses_above_field_galaxies():
    from slnb.core import real_data_path
    from slnb.detect import bright_sources, lens_probability, noise_matched_cutouts, read_euclid_q1_vis, weights_root
    q1, folder = real_data_path('euclid_q1'), weights_root() / 'detect-euclid-vis'
    if q1 is None: pytest.skip('no real Euclid Q1 data (set SLNB_REAL_DATA)')
    if not (folder / 'card.json').is_file(): pytest.skip(f'no shipped weights in {folder}')
    model, card = load_finder(folder)
    sigma = card['noise_sigma'][0]
    lenses, field = [], []
    for system in sorted(p for p in q1.iterdir() if p.is_dir()):
        img, rms = read_euclid_q1_vis(system)
        centre = (img.shape[0] // 2, img.shape[1] // 2)
        lenses.append(noise_matched_cutouts(img, [centre], 64, sigma, rms))
        if min(img.shape) >= 200: field.append(noise_matched_cutouts(img, bright_sources(img, rms, centre), 64, sigma, rms))
    p_lens = lens_probability(model, card, np.concatenate(lenses))
    p_field = lens_probability(model, card, np.concatenate(field))
    assert len(p_lens) == 4 and len(p_field) >= 10
    assert np.median(p_lens) > 0.5 and p_lens.min() > np.percentile(p_field, 90)


def test_scoring_turns_tf32_off_and_restores_the_flags_even_after_an_error():
    import torch
    from slnb.detect import ieee_fp32
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    with pytest.raises(RuntimeError):
        with ieee_fp32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
            raise RuntimeError('inside')
    assert torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before

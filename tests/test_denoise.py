"Denoising: the shipped denoiser on lenstronomy-made lenses, `slnb denoise` (extensions kept, NaNs, errors), Noise2Self."
import json

import numpy as np
import pytest
import torch
from astropy.io import fits

from slnb.cli import main
from slnb.denoise import (DenoiserConfig, arc_flux_ratio, denoise_images, find_denoiser, load_denoiser, psnr,
                          train_denoiser, wavelet_baseline)
from slnb.detect import NoWeightsError


@pytest.fixture(scope='module')
def shipped():
    try: return load_denoiser(find_denoiser('LSST', 'g,r,i'))
    except NoWeightsError as e: pytest.skip(str(e))


@pytest.fixture(scope='module')
def lenstronomy_lenses():
    from slnb.reference import reference_lenses
    return reference_lenses(24, 'LSST', 'g,r,i', seed=5, show_progress=False)


def test_shipped_denoiser_gains_6db_keeps_arc_flux_and_beats_wavelets(shipped, lenstronomy_lenses):
    model, card = shipped
    noisy, clean, arcs, _ = lenstronomy_lenses
    den = denoise_images(model, card, noisy)
    gain = psnr(den, clean) - psnr(noisy, clean)
    assert np.median(gain) >= 6.0
    assert np.median(gain) > np.median(psnr(wavelet_baseline(noisy, card['noise_sigma']), clean) - psnr(noisy, clean)) + 3
    r = arc_flux_ratio(den, clean, arcs, card['noise_sigma'])
    assert abs(np.nanmedian(r) - 1) < 0.05


def test_denoiser_follows_the_noise_level(shipped, lenstronomy_lenses):
    "Four times shallower data (noise x2) are denoised better when the VARIANCE says so than when it claims the\
 survey's depth, and the measured depth (no VARIANCE) does as well as the truth."
    from slnb.render import noise_variance
    from slnb.surveys import get_survey
    model, card = shipped
    noisy, clean, _, _ = lenstronomy_lenses
    var = noise_variance(torch.as_tensor(clean), get_survey('LSST').select('g,r,i')).numpy()
    shallow = clean + 2 * (noisy - clean)
    told = np.median(psnr(denoise_images(model, card, shallow, variance=4 * var), clean))
    misled = np.median(psnr(denoise_images(model, card, shallow, variance=var), clean))
    measured = np.median(psnr(denoise_images(model, card, shallow), clean))
    assert told > misled + 1.0 and abs(measured - told) < 0.5


def test_slnb_denoise_adds_denoised_and_keeps_every_extension(shipped, cube, tmp_path, capsys):
    from slnb.io import read_cube, write_cube
    cube.extensions['MASK'][1, :, :4] = 1
    cube.images[1, :, :4] = np.nan                                  # masked pixels may hold anything
    cube.images = np.nan_to_num(cube.images)
    write_cube(cube, tmp_path / 'in.fits')
    assert main(['denoise', str(tmp_path / 'in.fits'), '-o', str(tmp_path / 'out.fits')]) == 0
    out = read_cube(tmp_path / 'out.fits')
    assert set(out.extensions) == {'PSF', 'VARIANCE', 'MASK', 'DENOISED'} and out.header['DENOISER'] == 'denoise-lsst-gri'
    assert np.array_equal(out.images, cube.images) and np.array_equal(out.extensions['PSF'], cube.extensions['PSF'])
    assert list(out.catalog['id']) == list(cube.catalog['id'])
    d = out.extensions['DENOISED']
    assert d.shape == cube.shape and np.isfinite(d).all()
    assert d[:, :, 8:, 8:].std() < 0.5 * cube.images[:, :, 8:, 8:].std()        # pure noise: mostly removed
    assert main(['denoise', str(tmp_path / 'in.fits'), '-o', str(tmp_path / 'out.fits')]) == 2   # exists
    assert 'exists' in capsys.readouterr().err


def test_nan_pixels_are_denoised_around_and_cubes_without_weights_refused(shipped, tmp_path, capsys):
    model, card = shipped
    x = np.random.default_rng(4).normal(0, 0.07, (2, 3, 40, 40)).astype(np.float32)
    x[0, :, 10:14, 10:14] = np.nan
    y = denoise_images(model, card, x)
    assert np.isfinite(y).all() and np.abs(y[1]).max() < np.abs(x[1]).max()
    assert np.abs(y[0, :, 10:14, 10:14]).max() < 3 * 0.07             # the hole: filled from its neighbours, no spike
    assert main(['simulate', '--survey', 'Euclid', '--bands', 'VIS', '--n', '2', '-o', str(tmp_path / 'e.fits')]) == 0
    assert main(['denoise', str(tmp_path / 'e.fits'), '-o', str(tmp_path / 'd.fits')]) == 2
    err = capsys.readouterr().err
    assert 'no denoise weights for Euclid VIS' in err and 'denoise-lsst-gri' in err and 'Traceback' not in err


def test_noise2self_learns_to_denoise_from_noisy_images_alone():
    "No clean image is used in training; the result still beats the noisy input on held-out images."
    from slnb.render import Renderer, random_sersic_lenses
    from slnb.surveys import get_survey
    bands = get_survey('LSST').select('g,r,i')
    r = Renderer(bands, 64, 1, device='cpu')
    clean = r.noiseless(random_sersic_lenses(80, 3, 7)).numpy()
    noisy = r.noisy(torch.as_tensor(clean), torch.Generator().manual_seed(7)).numpy()
    cfg = DenoiserConfig(mode='noise2self', size='small', steps=150, batch=16, crop=32, lr=3e-3, n_val=0, seed=3,
                         compile=False)
    model, card = train_denoiser(cfg, 'cpu', show_progress=False, images=noisy[:64])
    held = slice(64, 80)
    gain = psnr(denoise_images(model, card, noisy[held]), clean[held]) - psnr(noisy[held], clean[held])
    assert np.median(gain) > 2.0 and card['config']['mode'] == 'noise2self'

"""Issue 8 point 6 trial: SLACS J2303+1422 (HST, lens light subtracted) binned 2x2 to 0.1", Gaussian PSF of the
core FWHM, fitted from the CNN prediction of nbs/50_predict (no central mask here). Run from the repo root:
`python bench/slacs_fit.py [MAX_STEPS]`; the data are read from ../shared/data/real."""
import numpy as np, json, sys
from astropy.io import fits
from astropy.table import Table
from slnb.io import make_cube
from slnb.fit import FitConfig, SamplerConfig, fit_lens, fit_row
from slnb.core import real_data_path
d = str(real_data_path('slacs_j2303+1422')) + '/'
img = fits.getdata(d + 'image_lens_subtracted.fits').astype(float)[:280, :280]
noise = fits.getdata(d + 'noise_map.fits').astype(float)[:280, :280]
psf = fits.getdata(d + 'psf.fits').astype(float)
rebin = lambda a: a.reshape(140, 2, 140, 2).sum((1, 3))
img2, var2 = rebin(img) / 4, rebin(noise ** 2) / 16
y, x = np.mgrid[:61, :61] - 30.0
sig = 2 * np.sqrt((psf >= 0.5 * psf.max()).sum() / np.pi) * 0.05 / 2.3548   # FWHM from the area above half maximum
cube = make_cube(img2[None, None], 'HST', 'F160W', pixel_scale=0.1, variance=var2[None, None])
cube.header = {'PSF_F160W': 2.3548 * sig}
print('PSF FWHM', 2.3548 * sig)
# the CNN's prediction for this lens (nbs/50_predict: image resampled to LSST pixels, de Vaucouleurs lens light put back)
pred = Table({'theta_E': [1.609], 'theta_E_std': [0.110], 'e1': [0.09], 'e2': [0.0], 'gamma1': [-0.003], 'gamma2': [-0.039],
              'center_x': [0.0], 'center_y': [0.0], 'e1_std': [0.03], 'e2_std': [0.03], 'gamma1_std': [0.04],
              'gamma2_std': [0.04], 'center_x_std': [0.05], 'center_y_std': [0.05]})
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
r = fit_lens(cube, 0, pred[0], FitConfig(sampler=SamplerConfig(max_steps=steps)))
row = fit_row(0, r)
print(json.dumps({k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}))
print(f"SLACS J2303+1422: theta_E {row['theta_E']:.3f} [{row['theta_E_lo']:.3f}, {row['theta_E_hi']:.3f}] vs 1.62 ({row['theta_E']/1.62-1:+.1%}), chi2 {row['chi2_red']:.2f}, crop {r.lk.model.crop}, {r.seconds}")

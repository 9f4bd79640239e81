"""Issue 8 point 6: SLACS J2303+1422 (HST ACS, lens light subtracted; theta_E 1.62", Bolton et al. 2008) binned 2x2 to
0.1", a Gaussian PSF of the archive PSF's core FWHM, the subtraction's dipole inside 0.4" masked, fitted from the CNN
prediction of nbs/50_predict with slnb.fit's defaults (the same as the SLACS cell of nbs/60_fit.ipynb).
Run from the repo root: `python bench/slacs_fit.py [MAX_STEPS]`; reads ../shared/data/real (or $SLNB_REAL_DATA),
writes bench/out/slacs_fit.json."""
import json
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

from slnb.core import real_data_path
from slnb.fit import FitConfig, SamplerConfig, fit_lens, fit_row
from slnb.io import make_cube

d = real_data_path('slacs_j2303+1422')
if d is None: sys.exit('slacs_j2303+1422 not found in $SLNB_REAL_DATA (default ../shared/data/real)')
img, noise = (fits.getdata(d / f)[:280, :280].astype(float) for f in ('image_lens_subtracted.fits', 'noise_map.fits'))
psf = fits.getdata(d / 'psf.fits').astype(float)
rebin = lambda a: a.reshape(140, 2, 140, 2).sum((1, 3))
yy, xx = np.mgrid[:140, :140] - 69.5
hst = make_cube((rebin(img) / 4)[None, None], 'HST', 'F160W', pixel_scale=0.1, variance=(rebin(noise ** 2) / 16)[None, None])
hst.extensions['MASK'] = (np.hypot(xx, yy) < 4)[None, None].astype(np.uint8)
hst.header = {'PSF_F160W': 2 * np.sqrt((psf >= 0.5 * psf.max()).sum() / np.pi) * 0.05}
cnn = dict(theta_E=1.609, theta_E_std=0.110, e1=0.09, e2=0.0, gamma1=-0.003, gamma2=-0.039, center_x=0.0, center_y=0.0,
           e1_std=0.03, e2_std=0.03, gamma1_std=0.04, gamma2_std=0.04, center_x_std=0.05, center_y_std=0.05)
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
r = fit_lens(hst, 0, cnn, FitConfig(sampler=SamplerConfig(max_steps=steps)))
row = fit_row(0, r)
row.update(published_theta_E=1.62, rel_error=row['theta_E'] / 1.62 - 1, crop=r.lk.model.crop, **{f't_{k}': v for k, v in r.seconds.items()})
print(f"SLACS J2303+1422: theta_E {row['theta_E']:.3f} [{row['theta_E_lo']:.3f}, {row['theta_E_hi']:.3f}] vs 1.62 "
      f"({row['rel_error']:+.1%}), chi2 {row['chi2_red']:.2f}, tau_max {row['tau_max']:.0f}, {row['n_steps']} steps, "
      f"{r.seconds['total']:.0f} s")
out = Path(__file__).parent / 'out'
out.mkdir(exist_ok=True)
(out / 'slacs_fit.json').write_text(json.dumps(row, indent=1, default=float))

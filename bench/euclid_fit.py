"""Issue 8, a held-out real lens: Euclid Q1 102020064_NEG635872258496841682 (VIS, 0.1"/pixel, lens light not removed),
fitted blind (no CNN is shipped for Euclid VIS) from the raw image with slnb.fit's defaults and the cutout's own PSF.
The blind start measures the arcs on the image less a Sérsic fit of its light (`slnb.fit.light_subtracted`).
The comparison is the PyAutoLens pipeline's Einstein radius in the data's result_erm.json: 0.765" (3 sigma 0.738-0.774),
made by the data's author and not a peer-reviewed value.
Run from the repo root: `python bench/euclid_fit.py [MAX_STEPS] [PIXELS]`; reads ../shared/data/real (or
$SLNB_REAL_DATA), writes bench/out/euclid_fit.json."""
import json
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

from slnb.core import atomic_write, real_data_path
from slnb.fit import FitConfig, SamplerConfig, fit_lens, fit_row
from slnb.io import make_cube

NAME = '102020064_NEG635872258496841682'
q1 = real_data_path('euclid_q1')
if q1 is None or not (q1 / NAME).is_dir(): sys.exit(f'euclid_q1/{NAME} not found in $SLNB_REAL_DATA (default ../shared/data/real)')
d = q1 / NAME / 'vis'
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
img, noise = (fits.getdata(d / f).astype(float) for f in ('data.fits', 'noise_map.fits'))
psf = fits.getdata(d / 'psf.fits').astype(float)
c = slice(img.shape[0] // 2 - n // 2, img.shape[0] // 2 + n // 2)
cube = make_cube(img[c, c][None, None], 'Euclid', 'VIS', pixel_scale=0.1, variance=(noise[c, c] ** 2)[None, None],
                 psf=(psf / psf.sum())[None])
ref = json.loads((q1 / NAME / 'result_erm.json').read_text())
r = fit_lens(cube, 0, None, FitConfig(sampler=SamplerConfig(moves='hmc', max_steps=steps)))
row = fit_row(0, r)
out = dict(name=NAME, pixels=n, theta_E=row['theta_E'], theta_E_lo=row['theta_E_lo'], theta_E_hi=row['theta_E_hi'],
           pyautolens_theta_E=ref['einstein_radius_max_lh'],
           pyautolens_3sigma=[ref['einstein_radius_lower_3_sigma'], ref['einstein_radius_upper_3_sigma']],
           rel_error=row['theta_E'] / ref['einstein_radius_max_lh'] - 1, chi2_red=row['chi2_red'], tau_max=row['tau_max'],
           n_steps=row['n_steps'], converged=row['converged'], acceptance=row['acceptance'], seconds=r.seconds)
print(f"Euclid Q1 {NAME}: theta_E {out['theta_E']:.3f}\" [{out['theta_E_lo']:.3f}, {out['theta_E_hi']:.3f}] against "
      f"PyAutoLens {out['pyautolens_theta_E']:.3f}\" ({out['rel_error']:+.1%}), chi2/pixel {out['chi2_red']:.2f}, "
      f"tau_max {out['tau_max']:.1f}, {out['n_steps']} steps, converged {out['converged']}, {r.seconds['total']:.0f} s")
with atomic_write(Path(__file__).parent / 'out' / 'euclid_fit.json') as f: json.dump(out, f, indent=1, default=float)

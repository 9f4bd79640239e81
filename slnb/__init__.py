"""Survey images to a catalogue of modelled strong gravitational lenses: simulate, denoise, deblend, detect, predict, fit, report.

Modules:

- `slnb.detect`: A CNN lens finder for multi-band cutouts: noise-scaled inputs, a pre-activation ResNet, training on streamed simulations with augmentation, calibrated probabilities, and the Strong Lens Finding Challenge's metrics.
- `slnb.reference`: Reference sets imaged by lenstronomy: lenses and hard look-alikes that no slnb renderer touched, to show that slnb's networks work on images they were not made from."""

__version__ = "0.1.0"

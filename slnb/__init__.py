"""Survey images to a catalogue of modelled strong gravitational lenses: simulate, denoise, deblend, detect, predict, fit, report.

Modules:

- `slnb.deblend`: Lens light separated from the arcs: a U-Net that splits each cutout into `LENS_LIGHT` and `ARCS` whose sum is the denoised image, a lenstronomy Sérsic fit as the baseline, and masks of unrelated neighbours.
- `slnb.denoise`: A noise-conditioned U-Net that denoises multi-band cutouts, trained on simulated noisy/clean pairs or, where there is no clean truth, on the noisy images alone (Noise2Self); with the classical baselines beside it.
- `slnb.detect`: A CNN lens finder for multi-band cutouts: noise-scaled inputs, a pre-activation ResNet, training on streamed simulations with augmentation, calibrated probabilities, and the Strong Lens Finding Challenge's metrics.
- `slnb.embed`: Self-supervised embeddings of cutouts: an encoder pretrained by contrastive learning on unlabelled images, so that a search can start from a handful of real lenses instead of from simulations alone.
- `slnb.fewshot`: Few-shot lens search: score every cutout by its likeness to a handful of known lenses, and list the nearest neighbours of any object, in the embedding space of `42_embed`.
- `slnb.reference`: Reference sets imaged by lenstronomy: lenses and hard look-alikes that no slnb renderer touched, to show that slnb's networks work on images they were not made from.
- `slnb.semisup`: Lens finding from few labels: fine-tuning the self-supervised embedding, a linear probe on it, and semi-supervised training with confident pseudo-labels (FixMatch), compared with supervised training on the same labels."""

__version__ = "0.1.0"

"""FID, KID and precision / recall of samples during training, computed by all processes and reduced over them."""

from typing import Literal

import lightning as L
import torch

from ddpm_signrelu.callbacks.base import ValidationEvaluator, diffusion_data
from ddpm_signrelu.callbacks.samples import rank_share
from ddpm_signrelu.diffusion import Sampler, Spacing, sampling_plan
from ddpm_signrelu.errors import ConfigError, check_choice
from ddpm_signrelu.images import to_uint8
from ddpm_signrelu.metrics.domain import fingerprint
from ddpm_signrelu.metrics.fid import FeatureDistances, load_feature_extractor


class SampleQuality(ValidationEvaluator):
    """Logs ``quality/fid``, ``quality/kid``, ``quality/kid_std``, ``quality/precision`` and ``quality/recall``.

    Compares ``num_samples`` samples (seeds ``seed``, ``seed + 1``, ...) with at most ``max_reference`` images of the
    ``reference`` split (``train``, the usual choice for FID, or ``heldout``). With ``features: domain`` the names end
    in ``_domain`` and the samples' classifier confidence and class balance are logged too (:class:`FeatureDistances`).

    Args:
        features, weights_path: see :func:`~ddpm_signrelu.metrics.fid.load_feature_extractor`; for ``domain`` the
            classifier cached next to the data, unless ``weights_path`` names another file.
        sampler, steps, eta, spacing: see ``DiffusionModel.generate``.  batch_size: images per call on each process.
    """

    def __init__(self, num_samples: int = 10000, sampler: Sampler = "ddim", steps: int | None = 100,
                 eta: float | None = None, spacing: Spacing | None = None, seed: int = 0,
                 reference: Literal["train", "heldout"] = "train", max_reference: int = 50000,
                 features: str = "inception", weights_path: str | None = None, batch_size: int = 256,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, every_n_val_checks: int = 1):
        super().__init__(every_n_val_checks)
        check_choice("reference", reference, ("train", "heldout"))
        if num_samples < 2 or max_reference < 2 or batch_size < 1:
            raise ConfigError("SampleQuality needs num_samples >= 2, max_reference >= 2 and batch_size >= 1")
        self.num_samples, self.seed = num_samples, seed
        self.sampling = {"sampler": sampler, "steps": steps, "eta": eta, "spacing": spacing}
        self.reference, self.max_reference, self.batch_size = reference, max_reference, batch_size
        self.distances: FeatureDistances | None = None  # built in setup, once the image shape is known
        self._options = (features, weights_path, kid_subsets, kid_subset_size)
        self._reference_done = False

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        sampling_plan(pl_module.diffusion.schedule, **self.sampling)  # bad options fail before the first step
        if self.distances is not None:
            return
        if stage == "fit":
            diffusion_data(trainer, "SampleQuality")  # its reference split: fail before the first step
        features, weights_path, subsets, subset_size = self._options
        data = None
        if features == "domain" and weights_path is None:
            dm = diffusion_data(trainer, "SampleQuality")
            weights_path, data = dm.classifier_path, fingerprint(dm.train_data)
        extractor = load_feature_extractor(features, weights_path, data)  # fails before the first step
        self.distances = FeatureDistances(extractor, pl_module.data_shape, subsets, subset_size)

    def _add_reference(self, trainer: L.Trainer, pl_module) -> None:
        dm = diffusion_data(trainer, "SampleQuality")
        data = dm.train_data if self.reference == "train" else dm.val_data
        rows = rank_share(trainer, min(len(data), self.max_reference))
        for i in range(rows.start, rows.stop, self.batch_size):
            batch = dm.to_unit(data[i:min(i + self.batch_size, rows.stop)]).to(pl_module.device)
            self.distances.update(to_uint8(batch, pl_module.hparams.num_levels), real=True)
        self._reference_done = True

    @torch.no_grad()
    def evaluate_model(self, trainer: L.Trainer, pl_module) -> None:
        self.distances.to(pl_module.device)
        if not self._reference_done:
            self._add_reference(trainer, pl_module)
        was_training = pl_module.training
        pl_module.eval()
        mine = rank_share(trainer, self.num_samples)
        for i in range(mine.start, mine.stop, self.batch_size):
            seeds = range(self.seed + i, self.seed + min(i + self.batch_size, mine.stop))
            x = pl_module.generate(seeds, **self.sampling)
            self.distances.update(to_uint8(x, pl_module.hparams.num_levels), real=False)
        pl_module.train(was_training)
        suffix = "_domain" if self._options[0] == "domain" else ""
        for name, value in self.distances.compute().items():
            pl_module.log(f"quality/{name}{suffix}", value, batch_size=1)
        self.distances.reset_generated()

"""Plain-torch diffusion: schedules, forward process, losses, the bound, samplers and :class:`Diffusion`."""

from ddpm_signrelu.diffusion.bound import (PROPOSALS, Draws, EvalPoints, Proposal, Strata, draw_for_items,
                                          evaluation_points, point_weights, predict, prior_kl, to_bits_per_dim, vb_term,
                                          vlb_columns, vlb_terms, weighted_columns, weighted_sq_columns)
from ddpm_signrelu.diffusion.diffusion import X0_MSE, Diffusion
from ddpm_signrelu.diffusion.losses import LOSSES, DenoisingLoss, Loss
from ddpm_signrelu.diffusion.process import (PARAMETERIZATIONS, Parameterization, predict_x0, q_posterior, q_sample,
                                            scales)
from ddpm_signrelu.diffusion.samplers import (SAMPLERS, SPACINGS, Sampler, Spacing, sample, sampling_plan, spaced_grid,
                                             step_coefficients, timestep_grid)
from ddpm_signrelu.diffusion.schedule import BETA_SCHEDULES, VARIANCES, BetaSchedule, NoiseSchedule, Variance

__all__ = ["BETA_SCHEDULES", "LOSSES", "PARAMETERIZATIONS", "PROPOSALS", "SAMPLERS", "SPACINGS", "VARIANCES", "X0_MSE",
           "BetaSchedule", "DenoisingLoss", "Diffusion", "Draws", "EvalPoints", "Loss", "NoiseSchedule",
           "Parameterization", "Proposal", "Sampler", "Spacing", "Strata", "Variance", "draw_for_items",
           "evaluation_points", "point_weights", "predict", "predict_x0", "prior_kl", "q_posterior", "q_sample",
           "sample", "sampling_plan", "scales", "spaced_grid", "step_coefficients", "timestep_grid", "to_bits_per_dim",
           "vb_term", "vlb_columns", "vlb_terms", "weighted_columns", "weighted_sq_columns"]

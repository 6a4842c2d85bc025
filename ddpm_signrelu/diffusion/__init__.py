"""Plain-torch diffusion: schedules, forward process, losses, the variational bound and samplers."""

from ddpm_signrelu.diffusion.bound import (PROPOSALS, Draws, EvalPoints, Proposal, Strata, draw_for_items,
                                          evaluation_points, predict, prior_kl, to_bits_per_dim, vb_term, vlb_columns,
                                          vlb_terms, weighted_sq_columns)
from ddpm_signrelu.diffusion.losses import LOSSES, Loss, diffusion_loss, sample_timesteps
from ddpm_signrelu.diffusion.process import predict_x0, q_posterior, q_sample, scales
from ddpm_signrelu.diffusion.samplers import SAMPLERS, Sampler, sample, step_coefficients, timestep_grid
from ddpm_signrelu.diffusion.schedule import BETA_SCHEDULES, VARIANCES, BetaSchedule, NoiseSchedule, Variance

__all__ = ["BETA_SCHEDULES", "LOSSES", "PROPOSALS", "SAMPLERS", "VARIANCES", "BetaSchedule", "Draws", "EvalPoints",
           "Loss", "NoiseSchedule", "Proposal", "Sampler", "Strata", "Variance", "diffusion_loss", "draw_for_items",
           "evaluation_points", "predict", "predict_x0", "prior_kl", "q_posterior", "q_sample", "sample",
           "sample_timesteps", "scales", "step_coefficients", "timestep_grid", "to_bits_per_dim", "vb_term",
           "vlb_columns", "vlb_terms", "weighted_sq_columns"]

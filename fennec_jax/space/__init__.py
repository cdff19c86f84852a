"""The transfer space: masked joint factorization of a models x tasks matrix.

A history of scores `scores[M, T]` (model m fine-tuned on task t), observed
where `mask` is True, is factorized as

  norm(scores)[m, t] ~ offset + model_bias[m] + task_bias[t] + U[m] . V[t]

with `U [M, k]` model factors and `V [T, k]` task factors. `norm` is a
per-task normalization computed from the observed entries only ('none',
'zscore', 'rank' or 'robust', see `SpaceConfig`). The fit is MAP under
Gaussian priors (probabilistic matrix factorization): with noise variance s2 and
prior variances s2_f (factors) and s2_b (biases) the negative log posterior,
multiplied by s2, is

  0.5 * sum_obs (y - yhat)^2 + 0.5 * lam * (|U|^2 + |V|^2)
                             + 0.5 * lam_b * (|model_bias|^2 + |task_bias|^2)

where `lam = s2 / s2_f` (`SpaceConfig.prior_precision`) and
`lam_b = s2 / s2_b` (`SpaceConfig.bias_prior_precision`) are prior
precisions in units of the noise precision. The loss visits the observed
entries either as a sparse COO list (cost O(observed); minibatches allowed)
or as a masked dense matrix through matmuls (cost O(M T k), much faster than
scatter-adds on a CPU once a few percent are observed); `SpaceConfig.layout`
picks. It is minimized with optax (Adam) by a pure jitted
`step(state, data, rng) -> (state, metrics)`; a seeded fraction of the
observed entries is held out for early stopping, and the best parameters (by
held-out RMSE) are restored at the end, or, by default
(`SpaceConfig.refit_on_all`), the fit reruns on every observed entry for the
best number of steps. Inputs are plain arrays (`fit`:
dense scores + mask; `fit_entries`: COO), so any History type plugs in.

Fold-in of a new task works in the raw score domain. Each fitted task t maps
back to raw scores through its affine normalization (raw = loc_t + scale_t *
norm; exact for 'none' and 'zscore', the least-squares affine fit for
'rank' and 'robust'), so its raw scores are linear in the model features

  phi[m] = [U[m], 1, model_bias[m]]     (d = k + 2 columns)

with the task's weight vector w_t = [scale_t V[t], loc_t + scale_t (offset +
task_bias[t]), scale_t]. A new task's w is given a Gaussian prior whose mean
and covariance are those of the fitted w_t (empirical Bayes, with shrinkage
of the covariance towards its diagonal), and the noise variance is the
held-out mean squared residual in raw units. K observed raw scores then give
the closed-form Bayesian linear regression posterior of w, hence a predictive
mean and standard deviation for every model. K = 0 returns the prior: the
population mean task, i.e. roughly the popularity ranking. Because the task's
offset (intercept) and scale (the coefficient of model_bias) are part of w, a
single observed score mostly moves the task's level, not its ranking, which
is what one score can actually tell. For normalization 'rank' or 'robust',
predicted scores are finally mapped through the population link
(`apply_link`), which restores the shape of a typical task's scores (the
long tail of failed fine-tunes) without changing the ranking.

Ranking a large repository for many tasks is one batched matmul, chunked
over models with a per-chunk `lax.top_k` (`TransferSpace.top_k`).

Modules (this package re-exports their public names):

* `transfer_space`: `SpaceConfig` and the fitted `TransferSpace`;
* `factorization`: the objective, the step and `fit` / `fit_entries`;
* `training`: the training loop (early stopping, donation, refit), shared
  with `fennec_jax.joint`;
* `normalization`: the per-task normalizations and the population link;
* `foldin`: the fold-in and scoring kernels;
* `kshot`: the K-shot fold-in learned on the history (how far to trust K
  observed scores, which historical tasks the new one resembles, blended
  with the K = 0 prior by leave-tasks-out simulation);
* `kshot_gp`: its conditional-Gaussian source (models co-vary);
* `kshot_calibrate`: the leave-tasks-out simulation that calibrates it;
* `kshot_lazy`: the calibration `Fennec` runs per K on first use.
"""

# pylint: disable=g-importing-member,useless-import-alias
from fennec_jax.space import kshot
from fennec_jax.space import kshot_calibrate
from fennec_jax.space import kshot_gp
from fennec_jax.space.factorization import Data
from fennec_jax.space.factorization import DenseData
from fennec_jax.space.factorization import fit
from fennec_jax.space.factorization import fit_entries
from fennec_jax.space.factorization import fit_space_from_history
from fennec_jax.space.factorization import FitInfo
from fennec_jax.space.factorization import init_state
from fennec_jax.space.factorization import make_optimizer
from fennec_jax.space.factorization import objective
from fennec_jax.space.factorization import State
from fennec_jax.space.factorization import step
from fennec_jax.space.foldin import FoldIn
from fennec_jax.space.kshot import KShotConfig
from fennec_jax.space.kshot import KShotFoldIn
from fennec_jax.space.normalization import _MAD_TO_STD
from fennec_jax.space.normalization import normalize
from fennec_jax.space.normalization import normalize_entries
from fennec_jax.space.normalization import ROBUST_CLIP
from fennec_jax.space.transfer_space import SpaceConfig
from fennec_jax.space.transfer_space import TransferSpace

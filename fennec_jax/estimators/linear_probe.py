"""Linear probe: held-out accuracy of an L2-regularised softmax regression.

Features are standardised with the training split's statistics; a multinomial
logistic regression (weights W [d, C], bias b) minimises

  mean_{i in train} CE(softmax(x_i W + b), y_i) + l2 / 2 ||W||^2

with optax L-BFGS (zoom line search), full batch, for at most `steps`
iterations (stopping once every gradient entry is below `gtol` = 1e-5). The
split is `fennec_jax.data.probe.balanced_split(labels, holdout_fraction, seed)`:
every class with >= 2 samples has at least one sample on each side. The score
is the accuracy on the held-out side. The objective is strictly convex, so the
result does not depend on the optimiser beyond convergence. Invariant to
permuting class ids and (through standardisation) to per-dimension scale.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fennec_jax.data import probe
from fennec_jax.estimators import _batch
from fennec_jax.estimators import _common


def standardise(x: jnp.ndarray, train: jnp.ndarray) -> jnp.ndarray:
  """Standardises x with the mean/std of the rows where train is 1."""
  w = train / jnp.sum(train)
  mean = w @ x
  std = jnp.sqrt(w @ (x - mean) ** 2)
  return (x - mean) / jnp.where(std > 0, std, 1.0)


def objective(params, x, onehot, train, l2):
  """Mean train cross-entropy + l2/2 ||W||^2."""
  w, b = params
  logp = jax.nn.log_softmax(x @ w + b, axis=-1)
  ce = -jnp.sum(logp * onehot, 1)
  return jnp.sum(ce * train) / jnp.sum(train) + 0.5 * l2 * jnp.sum(w * w)


def fit(x, onehot, train, l2: float, steps: int, gtol: float = 1e-5):
  """L-BFGS fit of the probe; returns (W, b).

  Stops after `steps` iterations or once the gradient's largest entry is
  below `gtol` (scipy's L-BFGS-B default), whichever comes first.
  """
  d, c = x.shape[1], onehot.shape[1]
  params = (jnp.zeros((d, c), x.dtype), jnp.zeros((c,), x.dtype))
  loss = lambda p: objective(p, x, onehot, train, l2)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry):
    it, params, state, _ = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad,
                                value_fn=loss)
    gmax = jnp.max(jnp.stack(
        [jnp.max(jnp.abs(g)) for g in jax.tree.leaves(grad)]))
    return it + 1, optax.apply_updates(params, updates), state, gmax

  def keep_going(carry):
    it, _, _, gmax = carry
    return (it < steps) & (gmax > gtol)

  init = (jnp.asarray(0), params, opt.init(params),
          jnp.asarray(jnp.inf, x.dtype))
  _, params, _, _ = jax.lax.while_loop(keep_going, step, init)
  return params


def _core(f, *, labels, train, num_classes, l2, steps):
  x = f.astype(_common.float_dtype(f))
  train = train.astype(x.dtype)
  x = standardise(x, train)
  onehot = _common.one_hot(labels, num_classes, x.dtype)
  w, b = fit(x, onehot, train, l2, steps)
  correct = (jnp.argmax(x @ w + b, 1) == labels).astype(x.dtype)
  test = 1.0 - train
  return jnp.sum(correct * test) / jnp.sum(test)


def _prepare(stack, labels, *, num_classes=None, l2=1e-2, steps=100,
             holdout_fraction=0.2, seed=0):
  labels, num_classes = _common.check_labels(labels, stack.shape[1],
                                             num_classes)
  train = probe.balanced_split(labels, holdout_fraction, seed=seed)
  if train.all():
    raise ValueError('linear_probe: no class has two samples, so nothing can '
                     'be held out.')
  if l2 < 0 or int(steps) < 1:
    raise ValueError(f'need l2 >= 0 and steps >= 1, got {l2}, {steps}.')
  return (dict(num_classes=num_classes, l2=float(l2), steps=int(steps)),
          dict(labels=labels, train=train.astype(np.float32)))


SPEC = _batch.Spec('linear_probe', _core, _prepare, doc=__doc__)

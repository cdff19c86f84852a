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

W has `max_classes` columns; the logits of padding classes are -inf, so they
take no probability, their gradient is 0 and their weights stay 0: the fit is
the C-class one.
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


def _logits(params, x, live):
  """x W + b, with -inf for the classes that are not live."""
  w, b = params
  logits = x @ w + b
  return logits if live is None else jnp.where(live, logits, -jnp.inf)


def objective(params, x, onehot, train, l2, live=None):
  """Mean train cross-entropy + l2/2 ||W||^2.

  `live` ([C] booleans, default all) masks padding classes out.
  """
  w, _ = params
  logp = jax.nn.log_softmax(_logits(params, x, live), axis=-1)
  ce = -jnp.sum(jnp.where(onehot > 0, logp, 0.0), 1)
  return jnp.sum(ce * train) / jnp.sum(train) + 0.5 * l2 * jnp.sum(w * w)


def fit(x, onehot, train, l2: float, steps: int, gtol: float = 1e-5,
        live=None):
  """L-BFGS fit of the probe; returns (W, b).

  Stops after `steps` iterations or once the gradient's largest entry is
  below `gtol` (scipy's L-BFGS-B default), whichever comes first. `live`
  ([C] booleans, default all) masks padding classes out.
  """
  d, c = x.shape[1], onehot.shape[1]
  params = (jnp.zeros((d, c), x.dtype), jnp.zeros((c,), x.dtype))
  loss = lambda p: objective(p, x, onehot, train, l2, live)
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


def _core(f, *, labels, train, num_classes, max_classes, l2, steps):
  x = f.astype(_common.float_dtype(f))
  train = train.astype(x.dtype)
  x = standardise(x, train)
  onehot = _common.one_hot(labels, max_classes, x.dtype)
  live = _common.class_mask(num_classes, max_classes, x.dtype) > 0
  params = fit(x, onehot, train, l2, steps, live=live)
  correct = (jnp.argmax(_logits(params, x, live), 1) == labels).astype(
      x.dtype)
  test = 1.0 - train
  return jnp.sum(correct * test) / jnp.sum(test)


def _prepare(stack, labels, *, num_classes=None, max_classes=None, l2=1e-2,
             steps=100, holdout_fraction=0.2, seed=0):
  bound, arrays = _common.class_arrays(labels, stack.shape[1], num_classes,
                                       max_classes)
  train = probe.balanced_split(arrays['labels'], holdout_fraction, seed=seed)
  if train.all():
    raise ValueError('linear_probe: no class has two samples, so nothing can '
                     'be held out.')
  if l2 < 0 or int(steps) < 1:
    raise ValueError(f'need l2 >= 0 and steps >= 1, got {l2}, {steps}.')
  return (dict(max_classes=bound, l2=float(l2), steps=int(steps)),
          dict(arrays, train=train.astype(np.float32)))


SPEC = _batch.Spec('linear_probe', _core, _prepare, doc=__doc__)

"""The training loop of the learned factorizations (transfer and joint space).

A fit is a pure, jitted `step(state, data, rng, **kwargs) -> (state,
metrics)`; `multi_step` compiles `num_steps` of them into one `fori_loop`
whose input state is donated (the optimizer state is updated in place, not
copied). `train` runs that loop `eval_every` steps at a time on the host,
evaluates a held-out loss after each run, keeps a copy of the best
parameters and stops after `patience` evaluations without improvement.
`refit` reruns a fixed number of steps (the best step found by `train`) from
a fresh state, e.g. on all observed entries once the held-out ones have
chosen when to stop.
"""

from collections.abc import Callable, Sequence
import dataclasses
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

# advance(state, num_steps) -> (state, training loss of the last step).
Advance = Callable[[Any, int], tuple[Any, jax.Array]]


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """When to evaluate and when to stop.

  Attributes:
    max_steps: the most optimizer steps.
    eval_every: steps between evaluations (run as one compiled loop).
    patience: stop after this many evaluations without improvement.
    early_stopping: whether `patience` applies (False without held-out
      data: the loop then runs `max_steps` and keeps the best evaluation).
  """
  max_steps: int
  eval_every: int
  patience: int
  early_stopping: bool = True


class LoopResult(NamedTuple):
  """What `train` found.

  Attributes:
    params: a copy of the parameters at the best evaluation.
    best_step: the step of that evaluation.
    best_loss: its evaluation loss.
    steps: the number of steps run.
    eval_steps: [E] steps at which the loop evaluated.
    eval_losses: [E] the evaluation losses there.
    train_losses: [E] the training loss of the last step before each.
  """
  params: Any
  best_step: int
  best_loss: float
  steps: int
  eval_steps: np.ndarray
  eval_losses: np.ndarray
  train_losses: np.ndarray


def tree_norm(tree: Any) -> jax.Array:
  """Global L2 norm (optax.tree.norm, which older optax lacks)."""
  return jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree)))


def multi_step(step: Callable[..., tuple[Any, dict[str, jax.Array]]],
               static_argnames: Sequence[str] = ()) -> Callable[..., Any]:
  """`num_steps` calls of `step` as one compiled loop, the state donated.

  Args:
    step: `step(state, data, rng, **kwargs) -> (state, metrics)`, pure;
      `state.step` is the step counter and `metrics['loss']` the training
      loss.
    static_argnames: the keyword arguments of `step` that are static (a
      config); the others are traced.

  Returns:
    `run(state, data, rng, *, num_steps, **kwargs) -> (state, last loss)`,
    jitted; step i uses the key `fold_in(rng, state.step)`. The state passed
    in is donated: its buffers are reused for the result.
  """

  def run(state, data, rng, *, num_steps, **kwargs):

    def body(_, carry):
      st, _ = carry
      st, metrics = step(st, data, jax.random.fold_in(rng, st.step),
                         **kwargs)
      return st, metrics['loss']

    return jax.lax.fori_loop(0, num_steps, body,
                             (state, jnp.zeros((), jnp.float32)))

  return jax.jit(run, static_argnames=('num_steps', *static_argnames),
                 donate_argnums=(0,))


def _copy(params):
  # The state (and so these buffers) is donated to the next run.
  return jax.tree.map(jnp.copy, params)


def train(state: Any, advance: Advance,
          evaluate: Callable[[Any], jax.Array], config: LoopConfig, *,
          name: str, hint: str = 'lower the learning rate') -> LoopResult:
  """Trains with periodic evaluation and early stopping.

  Args:
    state: the initial state (with a `params` field); donated to `advance`.
    advance: `advance(state, n) -> (state, loss)` runs n steps (typically a
      `multi_step` function with the data bound).
    evaluate: `evaluate(params) -> loss` on held-out data (lower is better).
    config: LoopConfig.
    name: what is being fitted, for the log and errors.
    hint: what to change when the fit diverges, for the error.

  Returns:
    LoopResult. A non-finite evaluation ends the loop (with a warning); the
    best finite one is kept.

  Raises:
    ValueError: if no evaluation was finite (the fit diverged at once).
  """
  best_loss, best_step, best_params = np.inf, 0, _copy(state.params)
  eval_steps, eval_losses, train_losses = [], [], []
  since_best, steps = 0, 0
  while steps < config.max_steps:
    n = min(config.eval_every, config.max_steps - steps)
    state, loss = advance(state, n)
    steps += n
    value = float(evaluate(state.params))
    eval_steps.append(steps)
    eval_losses.append(value)
    train_losses.append(float(loss))
    if not np.isfinite(value):
      logging.warning('%s: held-out RMSE is %s at step %d; stopping (lower '
                      'the learning rate).', name, value, steps)
      break
    if value < best_loss:
      best_loss, best_step, best_params = value, steps, _copy(state.params)
      since_best = 0
    else:
      since_best += 1
      if config.early_stopping and since_best >= config.patience:
        break
  if best_step == 0:
    raise ValueError(f'{name} fit diverged before the first evaluation '
                     f'(held-out RMSE {eval_losses}); {hint}.')
  logging.info('%s: %d steps, best held-out RMSE %.4f at step %d.', name,
               steps, best_loss, best_step)
  return LoopResult(params=best_params, best_step=best_step,
                    best_loss=best_loss, steps=steps,
                    eval_steps=np.asarray(eval_steps),
                    eval_losses=np.asarray(eval_losses),
                    train_losses=np.asarray(train_losses))


def refit(state: Any, advance: Advance, num_steps: int, eval_every: int
          ) -> Any:
  """Runs exactly `num_steps` steps, `eval_every` at a time (as `train` did,
  so the same compiled loops run), and returns the final state."""
  done = 0
  while done < num_steps:
    n = min(eval_every, num_steps - done)
    state, _ = advance(state, n)
    done += n
  return state

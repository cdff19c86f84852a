"""Tests of the shared training loop on a quadratic with a known answer."""

from typing import Any, NamedTuple

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.space import training

_LR = 0.1
_TARGET = 1.0     # minimiser of the training loss
_HELD_OUT = 0.5   # minimiser of the evaluation loss


class _State(NamedTuple):
  params: dict[str, Any]
  step: jax.Array


def _step(state, target, rng, *, lr):
  """Gradient descent on 0.5 (x - target)^2: x_t = target (1 - (1 - lr)^t)
  from x_0 = 0."""
  del rng
  x = state.params['x']
  loss = 0.5 * jnp.sum((x - target) ** 2)
  return (_State({'x': x - lr * (x - target)}, state.step + 1),
          {'loss': loss})


def _x(t):
  """The iterate after t steps, in float64."""
  return _TARGET * (1.0 - (1.0 - _LR) ** np.asarray(t, np.float64))


def _start():
  return _State({'x': jnp.zeros((1,), jnp.float32)},
                jnp.zeros((), jnp.int32))


def _advancer():
  """(advance, traces): a freshly compiled `multi_step` of `_step` and the
  list of its traces (one entry per compilation)."""
  traces = []

  def step(*args, **kwargs):
    traces.append(kwargs['lr'])
    return _step(*args, **kwargs)

  run = training.multi_step(step, static_argnames=('lr',))

  def advance(state, n):
    return run(state, jnp.float32(_TARGET), jax.random.key(0), lr=_LR,
               num_steps=n)

  return advance, traces


def _advance(state, n):
  return _advancer()[0](state, n)


def _held_out_loss(params):
  return jnp.abs(params['x'][0] - _HELD_OUT)


class TrainTest(absltest.TestCase):

  def test_stops_after_patience_and_returns_the_best_evaluation(self):
    # x_t passes the held-out minimiser 0.5 between steps 6 and 8:
    # |x_t - 0.5| at t = 2, 4, ... is 0.31, 0.156, 0.031, 0.070, 0.151, ...
    config = training.LoopConfig(max_steps=1000, eval_every=2, patience=3)
    advance, traces = _advancer()
    result = training.train(_start(), advance, _held_out_loss, config,
                            name='quadratic')
    np.testing.assert_array_equal(result.eval_steps, [2, 4, 6, 8, 10, 12])
    self.assertEqual(result.steps, 12)
    self.assertEqual(result.best_step, 6)
    np.testing.assert_allclose(result.params['x'], [_x(6)], rtol=1e-6)
    np.testing.assert_allclose(result.eval_losses,
                               np.abs(_x(result.eval_steps) - _HELD_OUT),
                               rtol=1e-5)
    self.assertAlmostEqual(result.best_loss, abs(_x(6) - _HELD_OUT),
                           places=6)
    # The training loss reported is that of the last step of each run.
    np.testing.assert_allclose(
        result.train_losses,
        0.5 * (_x(result.eval_steps - 1) - _TARGET) ** 2, rtol=1e-5)
    # One compiled run of 2 steps served every evaluation.
    self.assertLen(traces, 1)

  def test_without_early_stopping_reaches_the_minimiser(self):
    # The evaluation keeps improving, so the loop runs max_steps, the last
    # run shorter (101 = 10 x 10 + 1), and ends at the minimiser.
    config = training.LoopConfig(max_steps=101, eval_every=10, patience=1,
                                 early_stopping=False)
    advance, traces = _advancer()
    result = training.train(
        _start(), advance, lambda p: jnp.abs(p['x'][0] - _TARGET), config,
        name='quadratic')
    np.testing.assert_array_equal(result.eval_steps,
                                  list(range(10, 101, 10)) + [101])
    self.assertEqual(result.best_step, 101)
    np.testing.assert_allclose(result.params['x'], [_TARGET], atol=1e-4)
    np.testing.assert_allclose(result.params['x'], [_x(101)], rtol=1e-6)
    self.assertLen(traces, 2)   # runs of 10 and of 1 step

  def test_without_early_stopping_still_keeps_the_best(self):
    config = training.LoopConfig(max_steps=20, eval_every=2, patience=1,
                                 early_stopping=False)
    result = training.train(_start(), _advance, _held_out_loss, config,
                            name='quadratic')
    self.assertEqual(result.steps, 20)
    self.assertEqual(result.best_step, 6)
    np.testing.assert_allclose(result.params['x'], [_x(6)], rtol=1e-6)

  def test_the_state_is_donated_and_the_best_params_are_copies(self):
    state = _start()
    x0 = state.params['x']
    new, _ = _advance(state, 3)
    self.assertTrue(x0.is_deleted())
    np.testing.assert_allclose(new.params['x'], [_x(3)], rtol=1e-6)
    # The kept parameters stay readable while the loop goes on donating.
    config = training.LoopConfig(max_steps=1000, eval_every=2, patience=3)
    result = training.train(_start(), _advance, _held_out_loss, config,
                            name='quadratic')
    self.assertFalse(result.params['x'].is_deleted())

  def test_non_finite_evaluation_stops_and_keeps_the_best(self):
    calls = []

    def evaluate(params):
      calls.append(1)
      return _held_out_loss(params) if len(calls) < 3 else jnp.nan

    config = training.LoopConfig(max_steps=100, eval_every=2, patience=5)
    with self.assertLogs(level='WARNING') as logs:
      result = training.train(_start(), _advance, evaluate, config,
                              name='quadratic')
    self.assertIn('quadratic: held-out RMSE is nan at step 6', logs.output[0])
    self.assertEqual(result.steps, 6)
    self.assertEqual(result.best_step, 4)
    np.testing.assert_allclose(result.params['x'], [_x(4)], rtol=1e-6)

  def test_divergence_before_the_first_evaluation_raises(self):
    config = training.LoopConfig(max_steps=10, eval_every=5, patience=1)
    with self.assertRaisesRegex(
        ValueError, r'quadratic fit diverged before the first evaluation '
        r'\(held-out RMSE \[nan\]\); lower lr=0\.1\.'):
      training.train(_start(), _advance, lambda p: jnp.nan, config,
                     name='quadratic', hint='lower lr=0.1')


class MultiStepTest(absltest.TestCase):

  def test_step_keys_fold_in_the_step_counter(self):

    def noisy(state, data, rng):
      del data
      x = state.params['x'] + jax.random.normal(rng, (1,))
      return _State({'x': x}, state.step + 1), {'loss': jnp.sum(x)}

    run = training.multi_step(noisy)
    rng = jax.random.key(7)
    state = _State({'x': jnp.zeros((1,))}, jnp.asarray(5, jnp.int32))
    out, loss = run(state, None, rng, num_steps=3)
    expected = sum(np.asarray(jax.random.normal(jax.random.fold_in(rng, s),
                                                (1,)))
                   for s in (5, 6, 7))
    np.testing.assert_allclose(out.params['x'], expected, rtol=1e-6)
    self.assertEqual(int(out.step), 8)
    np.testing.assert_allclose(loss, expected.sum(), rtol=1e-6)

  def test_refit_runs_exactly_the_steps_in_the_same_runs(self):
    advance, traces = _advancer()
    state = training.refit(_start(), advance, 7, eval_every=3)
    self.assertEqual(int(state.step), 7)
    np.testing.assert_allclose(state.params['x'], [_x(7)], rtol=1e-6)
    self.assertLen(traces, 2)   # runs of 3, 3 and 1 steps
    self.assertEqual(int(training.refit(_start(), _advance, 0, 3).step), 0)

  def test_tree_norm(self):
    tree = {'a': jnp.array([3.0]), 'b': (jnp.array([[4.0]]), jnp.zeros(2))}
    self.assertAlmostEqual(float(training.tree_norm(tree)), 5.0, places=6)


if __name__ == '__main__':
  absltest.main()

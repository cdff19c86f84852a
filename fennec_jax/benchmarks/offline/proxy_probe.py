"""How good is the proxy? A linear probe of its features on every target.

The proxy embeds a new task's images for Fennec; its features are only as
useful as they are linearly informative about the task. `probe_targets`
extracts the proxy's pooled features on each target's train and test splits
and fits a multinomial logistic regression (L2, full-batch L-BFGS on
standardized features, `fennec_jax` optimizers only) on train, reporting
test accuracy. The proxy never saw a target image (it is pretrained on the
single-domain sources), so this is an honest transfer number.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fennec_jax.benchmarks.offline import build
from fennec_jax.benchmarks.offline import zoo as zoo_lib
from fennec_jax.data import tasks as tasks_lib

PROXY_ID = 'proxy'


def features(module, variables: Any, images: np.ndarray,
             chunk: int = 250) -> np.ndarray:
  """Pooled backbone features `[n, d]` of uint8 images (eval mode)."""
  backbone_vars = {k: c['backbone'] for k, c in variables.items()}

  @jax.jit
  def embed(v, x):
    return module.backbone.apply(v, zoo_lib.preprocess(x), train=False)

  out = [np.asarray(embed(backbone_vars, images[i:i + chunk]))
         for i in range(0, len(images), chunk)]
  return np.concatenate(out)


def logistic_probe(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray,
                   yte: np.ndarray, num_classes: int, l2: float = 1e-3,
                   steps: int = 200) -> float:
  """Test accuracy of an L2 multinomial logistic regression (L-BFGS).

  Features are standardized with the train split's mean and std.
  """
  mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
  xtr = jnp.asarray((xtr - mu) / sd)
  xte = jnp.asarray((xte - mu) / sd)
  ytr = jnp.asarray(ytr)
  d = xtr.shape[1]
  params = (jnp.zeros((d, num_classes)), jnp.zeros((num_classes,)))

  def loss(p):
    logits = xtr @ p[0] + p[1]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, ytr).mean()
    return ce + l2 * jnp.sum(p[0] ** 2)

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  @jax.jit
  def run(p):
    def body(carry, _):
      p, state = carry
      value, grad = value_and_grad(p, state=state)
      updates, state = opt.update(grad, state, p, value=value, grad=grad,
                                  value_fn=loss)
      return (optax.apply_updates(p, updates), state), None
    (p, _), _ = jax.lax.scan(body, (p, opt.init(p)), None, length=steps)
    return p

  w, b = run(params)
  pred = np.asarray(jnp.argmax(xte @ w + b, axis=-1))
  return float(np.mean(pred == np.asarray(yte)))


def probe_targets(config: ml_collections.ConfigDict, workdir: str,
                  targets: list[str] | None = None,
                  model_id: str = PROXY_ID) -> dict[str, float]:
  """`{target: linear-probe test accuracy}` of a pretrained model's features.

  Args:
    config: the build config.
    workdir: the build's work directory (the model must be pretrained).
    targets: default `config.targets`.
    model_id: 'proxy' or a zoo model id.

  Returns:
    Accuracy per target, on the target's own test split.
  """
  variables, meta = build.load_pretrained(workdir, model_id)
  module = zoo_lib.make_classifier(meta['arch'], meta['head_classes'])
  data = build.TaskData(config, workdir)
  out = {}
  for task in targets or list(config.targets):
    x, y = data.get(task, 'train')
    xt, yt = data.get(task, 'test')
    k = tasks_lib.get_task(task).num_classes
    out[task] = logistic_probe(features(module, variables, x), y,
                               features(module, variables, xt), yt, k)
    data.drop(task)
  return out

"""Weight import into the Flax ViT / CLIP / ResNet definitions.

Reads PyTorch state dicts (a mapping, a `.pt`/`.pth`/`.bin` file or a
TorchScript archive such as OpenAI's CLIP `.pt`), `.safetensors` files (read
with `safetensors.numpy`, no torch needed), Hugging Face model directories, and
big_vision / google-research `vision_transformer` `.npz` files; then maps the
key names of the layout that wrote them onto `fennec_jax.models.vit`:

* `timm`: timm `vit_*`, `deit_*` (and DINOv2 in timm naming).
* `hf_clip`: transformers `CLIPVisionModel`, `CLIPVisionModelWithProjection`
  and full `CLIPModel` (the text tower is ignored, with a count).
* `hf_vit`: transformers `ViTModel` / `ViTForImageClassification` /
  `Dinov2Model`.
* `open_clip`: open_clip and OpenAI CLIP (`visual.*`).
* `big_vision`: big_vision and google-research/vision_transformer `.npz`
  (`embedding/kernel`, `Transformer/encoderblock_{i}` or the scanned
  `Transformer/encoderblock`).
* `torchvision_resnet`: delegated to `fennec_jax.models.resnet`.
* `flax`: keys that already are Flax paths (`blocks_0/attn/qkv/kernel`).

The converted tree is checked against the model's own abstract variables; any
difference raises a `ValueError` naming the first missing, unexpected and
mis-shaped keys, so a checkpoint of another architecture never loads silently.
Keys that the model has no use for by design (a text tower, `position_ids`,
ViTModel's pooler, a classifier head when `num_classes=0`) are dropped and
counted in a log line.
"""

import collections
from collections.abc import Mapping
import os
import re
from typing import Any

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax.models import resnet

LAYOUTS = ('timm', 'hf_clip', 'hf_vit', 'open_clip', 'big_vision',
           'torchvision_resnet', 'flax')
_MAX_LISTED = 5


def _to_numpy(value: Any) -> np.ndarray:
  """A float32 (or integer) NumPy array from a torch tensor or array."""
  if hasattr(value, 'detach'):  # torch.Tensor, without importing torch.
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    value = value.numpy()
  arr = np.asarray(value)
  if arr.dtype.kind == 'f' or arr.dtype.name == 'bfloat16':
    arr = arr.astype(np.float32)
  return arr


def _unwrap(obj: Any, path: str) -> Mapping[str, Any]:
  """Finds the tensor mapping inside a training checkpoint dict."""
  for key in ('state_dict', 'model', 'module', 'model_state', 'params'):
    if isinstance(obj, Mapping) and key in obj and isinstance(obj[key],
                                                              Mapping):
      inner = obj[key]
      if inner and all(hasattr(v, 'shape') for v in inner.values()):
        return inner
  if not isinstance(obj, Mapping):
    raise ValueError(f'{path}: expected a state dict (a mapping of names to '
                     f'tensors), got {type(obj).__name__}.')
  return obj


def _read_torch(path: str) -> Mapping[str, Any]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f'Reading {path} needs PyTorch (pip install '
                      'fennec_jax[interop]); .safetensors and .npz do not.'
                      ) from e
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except RuntimeError as e:
    if 'TorchScript' not in str(e) and 'jit' not in str(e).lower():
      raise
    obj = torch.jit.load(path, map_location='cpu').state_dict()
  return _unwrap(obj, path)


def read_checkpoint(checkpoint: str | os.PathLike[str] | Mapping[str, Any]
                    ) -> dict[str, np.ndarray]:
  """Reads a checkpoint into a flat `{name: float32 ndarray}` dict.

  Args:
    checkpoint: a state-dict mapping (torch tensors or arrays), a file
      (`.safetensors`, `.npz`, `.pt`, `.pth`, `.bin`) or a Hugging Face model
      directory (holding `model.safetensors` or `pytorch_model.bin`).

  Returns:
    Flat dict from the checkpoint's own key names to NumPy arrays. Nested
    `.npz`/Flax dicts are flattened with `/`.

  Raises:
    ValueError: unknown file type, missing file or empty checkpoint.
  """
  if isinstance(checkpoint, Mapping):
    flat = flax.traverse_util.flatten_dict(dict(checkpoint), sep='/') if any(
        isinstance(v, Mapping) for v in checkpoint.values()) else checkpoint
    out = {k: _to_numpy(v) for k, v in flat.items()}
    path = '<state dict>'
  else:
    path = os.fspath(checkpoint)
    if os.path.isdir(path):
      for fname in ('model.safetensors', 'pytorch_model.bin',
                    'open_clip_model.safetensors',
                    'open_clip_pytorch_model.bin'):
        if os.path.exists(os.path.join(path, fname)):
          return read_checkpoint(os.path.join(path, fname))
      raise ValueError(f'{path}: directory holds no model.safetensors or '
                       'pytorch_model.bin.')
    if not os.path.exists(path):
      raise ValueError(f'Checkpoint {path} does not exist.')
    ext = os.path.splitext(path)[1].lower()
    if ext == '.safetensors':
      from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
      raw = st_numpy.load_file(path)
    elif ext == '.npz':
      with np.load(path, allow_pickle=False) as npz:
        raw = {k: npz[k] for k in npz.files}
    elif ext in ('.pt', '.pth', '.bin', '.ckpt'):
      raw = _read_torch(path)
    else:
      raise ValueError(f'{path}: unknown checkpoint type {ext!r}; valid: '
                       '.safetensors, .npz, .pt, .pth, .bin, .ckpt or a '
                       'Hugging Face model directory.')
    out = {k: _to_numpy(v) for k, v in raw.items()}
  if not out:
    raise ValueError(f'{path}: the checkpoint holds no tensors.')
  return out


def detect_layout(state: Mapping[str, Any]) -> str:
  """Guesses which library wrote `state` from its key names.

  Args:
    state: flat checkpoint dict.

  Returns:
    One of `LAYOUTS`.

  Raises:
    ValueError: no known layout matches (lists a few keys).
  """
  keys = list(state)
  has = lambda pat: any(re.search(pat, k) for k in keys)
  if has(r'(^|\.)vision_model\.embeddings\.'):
    return 'hf_clip'
  if has(r'^visual\.(conv1|transformer|class_embedding)'):
    return 'open_clip'
  if has(r'(^|\.)embeddings\.patch_embeddings\.projection'):
    return 'hf_vit'
  if has(r'(^|/)embedding/kernel$'):
    return 'big_vision'
  if has(r'^patch_embed/kernel$'):
    return 'flax'
  if has(r'^patch_embed\.proj\.weight$'):
    return 'timm'
  if has(r'^(module\.)?layer1\.0\.conv1\.weight$'):
    return 'torchvision_resnet'
  raise ValueError(
      'Cannot tell which library wrote this checkpoint; first keys: '
      f'{keys[:8]}. Supported layouts: {", ".join(LAYOUTS)} (pass layout=).')


# ----------------------------------------------------------------------------
# Layout-specific renames: source module path -> Flax module path. The leaf
# (weight/bias/...) is mapped by `_leaf`, from its name and rank.
# ----------------------------------------------------------------------------
_TIMM_RULES = [
    (r'^patch_embed\.proj$', 'patch_embed'),
    (r'^norm_pre$', 'norm_pre'),
    (r'^blocks\.(\d+)\.(norm1|norm2)$', r'blocks_\1/\2'),
    (r'^blocks\.(\d+)\.attn\.(qkv|proj)$', r'blocks_\1/attn/\2'),
    (r'^blocks\.(\d+)\.(ls1|ls2)$', r'blocks_\1/\2'),
    (r'^blocks\.(\d+)\.mlp\.(fc1|fc2)$', r'blocks_\1/mlp/\2'),
    (r'^(norm|fc_norm|head)$', r'\1'),
]
_TIMM_SPECIAL = {'cls_token': 'cls_token', 'pos_embed': 'pos_embed'}
_TIMM_IGNORE = [r'^mask_token$']

_HF_CLIP_RULES = [
    (r'^vision_model\.embeddings\.patch_embedding$', 'patch_embed'),
    (r'^vision_model\.pre_layrnorm$', 'norm_pre'),
    (r'^vision_model\.encoder\.layers\.(\d+)\.layer_norm(1|2)$',
     r'blocks_\1/norm\2'),
    (r'^vision_model\.encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj$',
     r'blocks_\1/attn/\2'),
    (r'^vision_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj$',
     r'blocks_\1/attn/proj'),
    (r'^vision_model\.encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)$',
     r'blocks_\1/mlp/\2'),
    (r'^vision_model\.post_layernorm$', 'fc_norm'),
    (r'^visual_projection$', 'proj'),
]
_HF_CLIP_SPECIAL = {
    'vision_model.embeddings.class_embedding': 'cls_token',
    'vision_model.embeddings.position_embedding.weight': 'pos_embed',
}
_HF_CLIP_IGNORE = [r'^text_model\.', r'^text_projection\.', r'^logit_scale$',
                   r'position_ids$']

# transformers ViTModel / Dinov2Model: v4 (`encoder.layer.{i}.attention.
# attention.query`) and v5 (`layers.{i}.attention.q_proj`) names.
_HF_LAYER = r'^(?:encoder\.layers?|layers)\.(\d+)\.'
_HF_VIT_RULES = [
    (r'^embeddings\.patch_embeddings\.projection$', 'patch_embed'),
    (_HF_LAYER + r'(?:layernorm_before|norm1)$', r'blocks_\1/norm1'),
    (_HF_LAYER + r'(?:layernorm_after|norm2)$', r'blocks_\1/norm2'),
    (_HF_LAYER + r'attention\.attention\.(query|key|value)$',
     lambda m: f'blocks_{m[1]}/attn/{m[2][0]}'),
    (_HF_LAYER + r'attention\.(q|k|v)_proj$', r'blocks_\1/attn/\2'),
    (_HF_LAYER + r'attention\.(?:output\.dense|o_proj)$',
     r'blocks_\1/attn/proj'),
    (_HF_LAYER + r'(?:intermediate\.dense|mlp\.fc1)$', r'blocks_\1/mlp/fc1'),
    (_HF_LAYER + r'(?:output\.dense|mlp\.fc2)$', r'blocks_\1/mlp/fc2'),
    (_HF_LAYER + r'layer_scale(1|2)$', r'blocks_\1/ls\2'),
    (r'^layernorm$', 'norm'),
    (r'^classifier$', 'head'),
]
_HF_VIT_SPECIAL = {'embeddings.cls_token': 'cls_token',
                   'embeddings.position_embeddings': 'pos_embed'}
_HF_VIT_IGNORE = [r'^pooler\.', r'^embeddings\.mask_token$']

_OPEN_CLIP_RULES = [
    (r'^visual\.conv1$', 'patch_embed'),
    (r'^visual\.ln_pre$', 'norm_pre'),
    (r'^visual\.transformer\.resblocks\.(\d+)\.ln_1$', r'blocks_\1/norm1'),
    (r'^visual\.transformer\.resblocks\.(\d+)\.ln_2$', r'blocks_\1/norm2'),
    (r'^visual\.transformer\.resblocks\.(\d+)\.attn\.out_proj$',
     r'blocks_\1/attn/proj'),
    (r'^visual\.transformer\.resblocks\.(\d+)\.mlp\.c_fc$',
     r'blocks_\1/mlp/fc1'),
    (r'^visual\.transformer\.resblocks\.(\d+)\.mlp\.c_proj$',
     r'blocks_\1/mlp/fc2'),
    (r'^visual\.ln_post$', 'fc_norm'),
]
_OPEN_CLIP_SPECIAL = {'visual.class_embedding': 'cls_token',
                      'visual.positional_embedding': 'pos_embed'}
_OPEN_CLIP_IGNORE = [r'^(?!visual\.)', r'^visual\.input_resolution$',
                     r'^visual\.context_length$', r'^visual\.vocab_size$']


def _leaf(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
  """Maps a PyTorch leaf (`weight`, `bias`, ...) to its Flax name and layout."""
  if name == 'weight':
    if value.ndim == 1:
      return 'scale', value  # LayerNorm.
    if value.ndim == 2:
      return 'kernel', value.T  # Linear: [out, in] -> [in, out].
    if value.ndim == 4:
      return 'kernel', value.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
  if name == 'lambda1':  # transformers' LayerScale.
    return 'gamma', value
  if name in ('bias', 'gamma'):
    return name, value
  return name, value


def _special(target: str, value: np.ndarray) -> np.ndarray:
  if target == 'cls_token':
    return value.reshape(1, 1, -1)
  if target == 'pos_embed' and value.ndim == 2:
    return value[None]
  return value


def _rename(state: Mapping[str, np.ndarray], rules, special, ignore,
            strip: str = '') -> tuple[dict[str, np.ndarray], list[str],
                                       list[str]]:
  """Applies module renames; returns (converted, unmatched, ignored) keys."""
  out, unmatched, ignored = {}, [], []
  for key, value in state.items():
    src = key[len(strip):] if strip and key.startswith(strip) else key
    if src in special:
      out[special[src]] = _special(special[src], value)
      continue
    if any(re.search(p, src) for p in ignore):
      ignored.append(key)
      continue
    module, _, leaf = src.rpartition('.')
    for pattern, repl in rules:
      m = re.match(pattern, module)
      if m:
        target = repl(m) if callable(repl) else m.expand(repl)
        leaf_name, arr = _leaf(leaf, value)
        out[f'{target}/{leaf_name}'] = arr
        break
    else:
      unmatched.append(key)
  return out, unmatched, ignored


def _merge_qkv(flat: dict[str, np.ndarray]) -> None:
  """Concatenates separate q/k/v projections into the fused `qkv` (in place)."""
  for key in [k for k in flat if re.search(r'/attn/q/(kernel|bias)$', k)]:
    prefix, leaf = key.rsplit('/attn/q/', 1)
    parts = [f'{prefix}/attn/{n}/{leaf}' for n in 'qkv']
    if all(p in flat for p in parts):
      flat[f'{prefix}/attn/qkv/{leaf}'] = np.concatenate(
          [flat.pop(p) for p in parts], axis=-1)


def _open_clip(state: Mapping[str, np.ndarray]):
  flat, unmatched, ignored = _rename(state, _OPEN_CLIP_RULES,
                                     _OPEN_CLIP_SPECIAL, _OPEN_CLIP_IGNORE)
  rest = []
  for key in unmatched:
    m = re.match(r'^visual\.transformer\.resblocks\.(\d+)\.attn\.in_proj_'
                 r'(weight|bias)$', key)
    if m:
      v = state[key]
      flat[f'blocks_{m[1]}/attn/qkv/' +
           ('kernel' if m[2] == 'weight' else 'bias')] = (
               v.T if m[2] == 'weight' else v)
    elif key == 'visual.proj':
      flat['proj/kernel'] = state[key]  # Already [width, embed_dim].
    else:
      rest.append(key)
  return flat, rest, ignored


def _big_vision(state: Mapping[str, np.ndarray], num_prefix_tokens: int):
  """big_vision / vision_transformer `.npz` (non-scanned or scanned blocks)."""
  prefix = ''
  for p in ('opt/target/', 'params/img/', 'params/'):
    if f'{p}embedding/kernel' in state:
      prefix = p
  st = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
  ignored = [k for k in state if not k.startswith(prefix)]
  out, unmatched = {}, []
  orig = any(k.startswith('Transformer/posembed_input/') for k in st)
  # google-research/vision_transformer numbers the block's sub-modules
  # LayerNorm_0, MHA_1, LayerNorm_2, MlpBlock_3; big_vision 0, 0, 1, 0.
  mha, ln2, mlp = ('1', '2', '3') if orig else ('0', '1', '0')
  leaf_rules = [
      (rf'LayerNorm_0/(scale|bias)$', r'norm1/\1'),
      (rf'LayerNorm_{ln2}/(scale|bias)$', r'norm2/\1'),
      (rf'MlpBlock_{mlp}/Dense_0/(kernel|bias)$', r'mlp/fc1/\1'),
      (rf'MlpBlock_{mlp}/Dense_1/(kernel|bias)$', r'mlp/fc2/\1'),
  ]
  def block(i: str, sub: str, v: np.ndarray) -> bool:
    for pattern, repl in leaf_rules:
      m = re.match(pattern, sub)
      if m:
        out[f'blocks_{i}/' + m.expand(repl)] = v
        return True
    m = re.match(rf'MultiHeadDotProductAttention_{mha}/(query|key|value|out)/'
                 r'(kernel|bias)$', sub)
    if not m:
      return False
    if m[1] == 'out':
      v = v.reshape(-1, v.shape[-1]) if m[2] == 'kernel' else v
      out[f'blocks_{i}/attn/proj/{m[2]}'] = v
    else:
      v = v.reshape(v.shape[0], -1) if m[2] == 'kernel' else v.reshape(-1)
      out[f'blocks_{i}/attn/{m[1][0]}/{m[2]}'] = v
    return True

  for key, v in st.items():
    m = re.match(r'Transformer/encoderblock_(\d+)/(.*)$', key)
    if m:
      if not block(m[1], m[2], v):
        unmatched.append(prefix + key)
      continue
    m = re.match(r'Transformer/encoderblock/(.*)$', key)
    if m:  # Scanned: a leading depth axis.
      ok = all(block(str(i), m[1], v[i]) for i in range(v.shape[0]))
      if not ok:
        unmatched.append(prefix + key)
      continue
    if key in ('embedding/kernel', 'embedding/bias'):
      out['patch_embed/' + key.split('/')[1]] = v
    elif key == 'cls':
      out['cls_token'] = v
    elif key == 'Transformer/posembed_input/pos_embedding':
      out['pos_embed'] = v  # Includes the class token's position.
    elif key == 'pos_embedding':
      # big_vision adds positions before prepending the class token: the class
      # token gets a zero position here.
      if num_prefix_tokens:
        v = np.concatenate(
            [np.zeros((1, num_prefix_tokens, v.shape[-1]), v.dtype), v], 1)
      out['pos_embed'] = v
    elif key.startswith('Transformer/encoder_norm/'):
      out['norm/' + key.rsplit('/', 1)[1]] = v
    elif key.startswith('head/'):
      out[key] = v
    else:
      unmatched.append(prefix + key)
  _merge_qkv(out)
  return out, unmatched, ignored


def _first(items, n=_MAX_LISTED) -> str:
  items = list(items)
  more = f' (+{len(items) - n} more)' if len(items) > n else ''
  return ', '.join(items[:n]) + more


def check_against(flat: Mapping[str, np.ndarray], target: Any, *,
                  source: str, unmatched: list[str] = ()) -> dict[str, Any]:
  """Checks a flat converted dict against the model's abstract params.

  Args:
    flat: `{'blocks_0/attn/qkv/kernel': array, ...}`.
    target: the model's `params` tree (arrays or `ShapeDtypeStruct`s).
    source: name of the checkpoint, for the message.
    unmatched: checkpoint keys no rule recognized (reported as unexpected).

  Returns:
    The nested params dict of float32 arrays.

  Raises:
    ValueError: listing the first missing, unexpected and mis-shaped keys.
  """
  want = flax.traverse_util.flatten_dict(flax.core.unfreeze(target), sep='/')
  missing = [k for k in want if k not in flat]
  unexpected = list(unmatched) + [k for k in flat if k not in want]
  misshaped = [f'{k} {tuple(flat[k].shape)} vs model {tuple(want[k].shape)}'
               for k in want if k in flat
               and tuple(flat[k].shape) != tuple(want[k].shape)]
  if missing or unexpected or misshaped:
    raise ValueError(
        f'Checkpoint {source} does not match the model: '
        f'{len(missing)} missing [{_first(missing)}]; '
        f'{len(unexpected)} unexpected [{_first(unexpected)}]; '
        f'{len(misshaped)} mis-shaped [{_first(misshaped)}].')
  return flax.traverse_util.unflatten_dict(
      {k: np.asarray(v, np.float32) for k, v in flat.items()}, sep='/')


def _abstract_variables(model: nn.Module, input_shape) -> Any:
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  return jax.eval_shape(lambda r, x: model.init(r, x, train=False),
                        jax.random.key(0), x)


def _vit_flat(state, layout, model) -> tuple[dict, list, list]:
  num_prefix = 1 if getattr(model, 'class_token', True) else 0
  if layout == 'timm':
    return _rename(state, _TIMM_RULES, _TIMM_SPECIAL, _TIMM_IGNORE,
                   strip='module.')
  if layout == 'hf_clip':
    # A full CLIPModel nests the vision tower the same way; only strip a
    # `clip.`-style wrapper if present.
    flat, unmatched, ignored = _rename(state, _HF_CLIP_RULES, _HF_CLIP_SPECIAL,
                                       _HF_CLIP_IGNORE)
    _merge_qkv(flat)
    return flat, unmatched, ignored
  if layout == 'hf_vit':
    st = {k[4:] if k.startswith('vit.') else k: v for k, v in state.items()}
    flat, unmatched, ignored = _rename(st, _HF_VIT_RULES, _HF_VIT_SPECIAL,
                                       _HF_VIT_IGNORE)
    _merge_qkv(flat)
    return flat, unmatched, ignored
  if layout == 'open_clip':
    return _open_clip(state)
  if layout == 'big_vision':
    return _big_vision(state, num_prefix)
  if layout == 'flax':
    return dict(state), [], []
  raise ValueError(f'Layout {layout!r} does not hold a ViT; valid for ViT: '
                   'timm, hf_clip, hf_vit, open_clip, big_vision, flax.')


def convert(state: Mapping[str, np.ndarray], model: nn.Module,
            input_shape: tuple[int, int, int], *, layout: str | None = None,
            source: str = '<state dict>') -> dict[str, Any]:
  """Converts a flat checkpoint dict into Flax variables for `model`.

  Args:
    state: flat `{name: ndarray}` (see `read_checkpoint`).
    model: a `VisionTransformer` or `ResNet` module (its config decides the
      expected shapes; e.g. `num_classes=0` drops a checkpoint's head).
    input_shape: `(h, w, c)` the model is built for (sets `pos_embed`).
    layout: one of `LAYOUTS`; None detects it from the key names.
    source: checkpoint name for messages.

  Returns:
    Flax variables `{'params': ...}` (plus `batch_stats` for ResNet).

  Raises:
    ValueError: the checkpoint does not match the model (see `check_against`).
  """
  layout = layout or detect_layout(state)
  if layout not in LAYOUTS:
    raise ValueError(f'Unknown layout {layout!r}; valid: {LAYOUTS}.')
  target = _abstract_variables(model, input_shape)
  if layout == 'torchvision_resnet':
    st = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    if not getattr(model, 'num_classes', 1):
      dropped = [k for k in st if k.startswith('fc.')]
      st = {k: v for k, v in st.items() if not k.startswith('fc.')}
      if dropped:
        logging.info('weights: dropped %d classifier keys of %s '
                     '(num_classes=0).', len(dropped), source)
    return resnet.torchvision_resnet_to_flax(st, target)
  flat, unmatched, ignored = _vit_flat(state, layout, model)
  want = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(target['params']), sep='/')
  # With class-token pooling the final LayerNorm acts on one token either way,
  # so `norm` (timm / HF ViT) and `fc_norm` (CLIP) are the same computation.
  for a, b in (('norm', 'fc_norm'), ('fc_norm', 'norm')):
    if (getattr(model, 'pool', 'token') == 'token'
        and f'{a}/scale' in flat and f'{b}/scale' in want
        and f'{a}/scale' not in want):
      for leaf in ('scale', 'bias'):
        flat[f'{b}/{leaf}'] = flat.pop(f'{a}/{leaf}')
  head = [k for k in flat if k.startswith('head/') and k not in want]
  if head and not getattr(model, 'num_classes', 1):
    for k in head:
      ignored.append(k)
      del flat[k]
  if ignored:
    logging.info('weights: ignored %d keys of %s that the %s model does not '
                 'use (e.g. %s).', len(ignored), source, layout,
                 _first(ignored, 3))
  params = check_against(flat, target['params'], source=f'{source} '
                         f'({layout} layout)', unmatched=unmatched)
  return {'params': params}


def load_variables(model: nn.Module, input_shape: tuple[int, int, int],
                   checkpoint: str | os.PathLike[str] | Mapping[str, Any], *,
                   layout: str | None = None) -> dict[str, Any]:
  """Reads `checkpoint` (any supported format) into variables for `model`.

  Args:
    model: the linen module the weights are for.
    input_shape: `(h, w, c)` the model is built for.
    checkpoint: path, HF directory or state-dict mapping.
    layout: key-name layout (`LAYOUTS`); None detects it.

  Returns:
    Flax variables of float32 NumPy arrays.

  Raises:
    ValueError: unreadable checkpoint or one that does not match `model`.
  """
  source = ('<state dict>' if isinstance(checkpoint, Mapping)
            else os.fspath(checkpoint))
  state = read_checkpoint(checkpoint)
  counts = collections.Counter(v.dtype.name for v in state.values())
  logging.info('weights: read %d tensors from %s (%s).', len(state), source,
               dict(counts))
  return convert(state, model, input_shape, layout=layout, source=source)

"""Tests of meshes and array placement on the 8 fake CPU devices."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from fennec_jax import sharding


class MeshTest(parameterized.TestCase):

  @parameterized.parameters(1, 3, 8)
  def test_make_mesh_takes_the_first_devices(self, count):
    mesh = sharding.make_mesh(count)
    self.assertEqual(mesh.axis_names, (sharding.DATA_AXIS,))
    self.assertEqual(dict(mesh.shape), {sharding.DATA_AXIS: count})
    self.assertEqual(list(mesh.devices.flat), jax.devices()[:count])

  def test_make_mesh_defaults_to_all_devices(self):
    mesh = sharding.make_mesh()
    self.assertEqual(mesh.size, 8)
    self.assertEqual(mesh.axis_types, (jax.sharding.AxisType.Auto,))

  def test_make_mesh_axis_name_and_device_order(self):
    devices = jax.devices()[::-1]
    mesh = sharding.make_mesh(2, axis=sharding.MODELS_AXIS, devices=devices)
    self.assertEqual(mesh.axis_names, (sharding.MODELS_AXIS,))
    self.assertEqual(list(mesh.devices.flat), devices[:2])

  @parameterized.parameters(0, -1, 9, 2.5, True)
  def test_make_mesh_bad_num_devices(self, count):
    with self.assertRaisesRegex(
        ValueError, rf'num_devices={count!r}, but 8 devices are visible; '
        r'choose an int in 1\.\.8\.'):
      sharding.make_mesh(count)


class ShardingTest(parameterized.TestCase):

  def test_split_and_replicated(self):
    mesh = sharding.make_mesh(4)
    split = sharding.split(mesh)
    self.assertEqual(split.spec, jax.sharding.PartitionSpec('data'))
    self.assertEqual(sharding.num_shards(split), 4)
    rep = sharding.replicated(mesh)
    self.assertEqual(rep.spec, jax.sharding.PartitionSpec())
    self.assertEqual(sharding.num_shards(rep), 1)
    self.assertIs(split.mesh, mesh)
    self.assertIs(rep.mesh, mesh)

  def test_split_over_a_named_axis_of_a_2d_mesh(self):
    mesh = jax.make_mesh((2, 4), ('data', 'models'),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    self.assertEqual(sharding.num_shards(sharding.split(mesh)), 2)
    self.assertEqual(sharding.num_shards(sharding.split(mesh, 'models')), 4)
    both = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(('data', 'models')))
    self.assertEqual(sharding.num_shards(both), 8)

  @parameterized.parameters(np.float32, np.int32, np.bool_)
  def test_global_array_split_over_all_devices(self, dtype):
    mesh = sharding.make_mesh()
    host = (np.arange(16 * 3) % 5).astype(dtype).reshape(16, 3)
    out = sharding.global_array(host, sharding.split(mesh))
    self.assertEqual(out.sharding, sharding.split(mesh))
    self.assertEqual(out.dtype, host.dtype)
    np.testing.assert_array_equal(np.asarray(out), host)
    shards = sorted(out.addressable_shards, key=lambda s: s.index[0].start)
    self.assertLen(shards, 8)
    for i, shard in enumerate(shards):  # Device i holds rows 2i, 2i + 1.
      self.assertEqual(shard.device, jax.devices()[i])
      np.testing.assert_array_equal(np.asarray(shard.data),
                                    host[2 * i:2 * i + 2])

  def test_global_array_replicated(self):
    mesh = sharding.make_mesh(4)
    host = np.arange(6.0).reshape(2, 3)
    out = sharding.global_array(host, sharding.replicated(mesh))
    self.assertEqual(out.sharding, sharding.replicated(mesh))
    for shard in out.addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), host)

  def test_global_array_indivisible_rows_name_the_fix(self):
    mesh = sharding.make_mesh()
    with self.assertRaisesRegex(
        ValueError, r'shape \(5, 3\) cannot be split into 8 shards.*'
        r'padded_length'):
      sharding.global_array(np.zeros((5, 3)), sharding.split(mesh))
    padded = np.zeros((sharding.padded_length(5, 8), 3))
    self.assertEqual(
        sharding.global_array(padded, sharding.split(mesh)).shape, (8, 3))

  def test_put_and_put_replicated_of_a_pytree(self):
    mesh = sharding.make_mesh(2)
    tree = {'x': np.arange(8.0).reshape(4, 2),
            'y': (jnp.ones((2,), jnp.int32), np.zeros((6, 1), np.float32))}
    out = sharding.put(tree, sharding.split(mesh))
    self.assertEqual(jax.tree.structure(out), jax.tree.structure(tree))
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(tree)):
      self.assertEqual(got.sharding, sharding.split(mesh))
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    out = sharding.put_replicated(tree, mesh)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(tree)):
      self.assertEqual(got.sharding, sharding.replicated(mesh))
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

  def test_a_jitted_reduction_over_a_split_array(self):
    mesh = sharding.make_mesh()
    host = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)
    x = sharding.global_array(host, sharding.split(mesh))
    np.testing.assert_allclose(jax.jit(lambda a: a.sum(0))(x),
                               host.sum(0))

  def test_default_devices_inside_the_block_only(self):
    with sharding.default_devices(jax.devices()[3:5]):
      mesh = sharding.make_mesh()
      self.assertEqual(list(mesh.devices.flat), jax.devices()[3:5])
      self.assertEqual(sharding.make_mesh(devices=jax.devices()).size, 8)
      with sharding.default_devices(jax.devices()[:1]):
        self.assertEqual(sharding.make_mesh().size, 1)
      self.assertEqual(sharding.make_mesh().size, 2)
    self.assertEqual(sharding.make_mesh().size, 8)
    with self.assertRaisesRegex(ValueError, 'at least one device'):
      with sharding.default_devices([]):
        pass

  def test_put_on_devices_of_this_process_hands_over_every_row(self):
    with sharding.default_devices(jax.local_devices()[:2]):
      mesh = sharding.make_mesh()
    host = np.arange(12.0).reshape(6, 2)
    out = sharding.put(host, sharding.split(mesh))
    self.assertTrue(out.sharding.is_fully_addressable)
    np.testing.assert_array_equal(np.asarray(out), host)


class LengthTest(parameterized.TestCase):

  @parameterized.parameters((0, 8, 8), (1, 8, 8), (8, 8, 8), (9, 8, 16),
                            (17, 4, 20), (5, 1, 5))
  def test_padded_length(self, n, multiple, want):
    self.assertEqual(sharding.padded_length(n, multiple), want)

  @parameterized.parameters((-1, 8), (4, 0))
  def test_padded_length_bad_input(self, n, multiple):
    with self.assertRaisesRegex(ValueError, f'n={n}, multiple={multiple}'):
      sharding.padded_length(n, multiple)

  @parameterized.parameters(0, 1, 7, 100)
  def test_process_rows_in_one_process_is_everything(self, n):
    self.assertEqual(jax.process_count(), 1)
    self.assertEqual(sharding.process_rows(n), slice(0, n))


if __name__ == '__main__':
  absltest.main()

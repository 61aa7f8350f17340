"""``schedule.Every``, hand-computed: the runner's checkpoint, evaluation and keep schedules and
the GAN's snapshot chunks, as the loops it replaced computed them."""

from genrl_jax.generative import gan
from genrl_jax.run.schedule import Every


def test_checkpoints_evaluations_and_kept_steps():
  # --checkpoint_every=2 over 5 chunks saves 2, 4 and the last; --keep_every=2 keeps 2, 4;
  # evaluate_every=3 over 10 chunks runs after 3, 6, 9; 0 means never.
  assert [d for d in range(6) if Every(2, last=True).due(d, 5)] == [2, 4, 5]
  assert [d for d in range(6) if Every(2).due(d)] == [2, 4]
  assert [d for d in range(11) if Every(3).due(d, 10)] == [3, 6, 9]
  assert not any(Every().due(d, 5) for d in range(6))


def test_the_gan_snapshot_chunks():
  # 4000 iterations, 250 per chunk, a snapshot every 500 after 3000: iterations 0, 250, 500,
  # 1000, 2000, 3000, 3500, 4000 are chunks 0, 1, 2, 4, 8, 12, 14, 16.
  config = gan.GANConfig(iterations=4000, iterations_per_chunk=250, snapshot_every=500)
  on = tuple(i // 250 for i in gan.snapshot_iterations(config))
  assert [d for d in range(17) if Every(on=on).due(d)] == [0, 1, 2, 4, 8, 12, 14, 16]

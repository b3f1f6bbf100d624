"""A few hundred real training steps on the real MNIST files: the validation loss must fall."""

from vae_jax import train, workdir as workdir_lib
from vae_jax.config import Config


def test_validation_loss_falls_well_below_its_start(tmp_path, mnist_dir, tfds_dir):
  config = Config(epochs=3, milestones=(3,), train_examples=12_800, data_dir=tfds_dir,
                  manual_dir=mnist_dir)  # 3 epochs x 100 steps of 128
  lines = []
  state = train.train_and_evaluate(config, str(tmp_path), log=lines.append)
  rows = workdir_lib.read_metrics(str(tmp_path))
  assert int(state.step) == 300 and [r["epoch"] for r in rows] == [1, 2, 3]
  # An untrained decoder predicts p ~ 0.5 everywhere: ~784 ln 2 = 543 nats per image.
  # 300 steps reach well under 200; and the loss keeps falling epoch to epoch.
  assert rows[-1]["val_loss"] < 200.0
  assert rows[0]["val_loss"] > rows[1]["val_loss"] > rows[2]["val_loss"]
  assert 0.5 < rows[-1]["val_kl"] < 20.0  # the code is used, but not absurdly
  assert any(line.startswith("epoch    3/3") for line in lines)

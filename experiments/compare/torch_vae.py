"""PyTorch (eager) MNIST VAE training benchmark matching the vae_jax networks, on CPU or CUDA."""
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_files import load_mnist, run_parser  # noqa: E402


def parse_args():
  p = run_parser(__doc__)
  p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                 help="cuda: the data, model and optimizer on the GPU (cuDNN autotuning on)")
  p.add_argument("--compile", action="store_true",
                 help="train torch.compile(model) rather than the eager model")
  return p.parse_args()


class Encoder(nn.Module):

  def __init__(self, arch, latent_dim):
    super().__init__()
    if arch == "mlp":
      self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU())
      width = 256
    else:
      # padding=1 gives the same 28->14->7 shapes as Keras "same" (which pads only bottom/right).
      self.body = nn.Sequential(
          nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),
          nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
          nn.Flatten(), nn.Linear(7 * 7 * 64, 16), nn.ReLU())
      width = 16
    self.mean = nn.Linear(width, latent_dim)
    self.logvar = nn.Linear(width, latent_dim)

  def forward(self, x):
    h = self.body(x)
    return self.mean(h), self.logvar(h)


def make_decoder(arch, latent_dim):
  if arch == "mlp":
    return nn.Sequential(
        nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(),
        nn.Linear(512, 784), nn.Unflatten(1, (1, 28, 28)))
  return nn.Sequential(
      nn.Linear(latent_dim, 7 * 7 * 64), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
      nn.ConvTranspose2d(64, 64, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
      nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
      nn.ConvTranspose2d(32, 1, 3, stride=1, padding=1))


class VAE(nn.Module):

  def __init__(self, arch, latent_dim):
    super().__init__()
    self.encoder = Encoder(arch, latent_dim)
    self.decoder = make_decoder(arch, latent_dim)

  def forward(self, x):
    mean, logvar = self.encoder(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    logits = self.decoder(z)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=(1, 2, 3))
    kl = 0.5 * torch.sum(torch.exp(logvar) + mean**2 - 1.0 - logvar, dim=1)
    return torch.mean(bce + kl)


def training_inputs(images):
  """uint8 images [N, 28, 28] -> float32 tensor [N, 1, 28, 28] in [0, 1]."""
  return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


def make_vae(arch, latent_dim, device="cpu"):
  """(the VAE on device, its Adam optimizer with learning rate 1e-3)."""
  model = VAE(arch, latent_dim).to(device)
  return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def train_epoch(model, opt, data, batch_size):
  """One epoch over data in a fresh random order, the last incomplete batch dropped:
  (seconds, mean loss)."""
  start = time.perf_counter()
  steps = len(data) // batch_size
  perm = torch.randperm(len(data), device=data.device)
  total = torch.zeros((), device=data.device)
  for i in range(steps):
    x = data[perm[i * batch_size:(i + 1) * batch_size]]
    loss = model(x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    total += loss.detach()
  mean_loss = total.item() / steps  # waits for the device's queue to finish
  return time.perf_counter() - start, mean_loss


def main():
  args = parse_args()
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(args.seed)
  torch.backends.cudnn.benchmark = True  # picks the fastest cuDNN algorithm per shape
  images, _ = load_mnist(args.manual_dir)
  data = training_inputs(images[:args.train_examples]).to(args.device)
  model, opt = make_vae(args.arch, args.latent_dim, args.device)
  if args.compile:
    model = torch.compile(model)  # the same parameters, traced and fused on the first batch
  steps = len(data) // args.batch_size  # drops the last incomplete batch
  epoch_seconds, epoch_losses = [], []
  for epoch in range(args.epochs):
    seconds, loss = train_epoch(model, opt, data, args.batch_size)
    epoch_seconds.append(seconds)
    epoch_losses.append(loss)
    print(f"epoch {epoch + 1}: loss {epoch_losses[-1]:.2f} ({epoch_seconds[-1]:.2f}s)", file=sys.stderr)
  timed = epoch_seconds[1:] or epoch_seconds  # epoch 1 is warm-up
  print(json.dumps({
      "framework": "pytorch", "arch": args.arch, "batch_size": args.batch_size,
      "latent_dim": args.latent_dim, "compiled": args.compile,
      "images_per_sec": steps * args.batch_size * len(timed) / sum(timed),
      "epoch_seconds": epoch_seconds, "epoch_losses": epoch_losses, "final_loss": epoch_losses[-1],
      "device": (torch.cuda.get_device_name() if args.device == "cuda"
                 else f"cpu ({torch.get_num_threads()} threads)"),
      "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
  }))


if __name__ == "__main__":
  main()

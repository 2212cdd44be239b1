"""RealNVP on Fashion-MNIST: exact bits/dim of the dequantized 8-bit images.

  python experiments/main.py --config=configs/realnvp.py --workdir=runs/realnvp

Target: test bits/dim <= 3.0 (Glow-type flows reach about 2.9). NOT reached
on this CPU: 3.298 exact bits/dim after these 9,000 steps at batch 64
(~10 epochs; 97 minutes on 2 CPU cores shared with other runs; ~2.3 steps/s
alone). The same run continued to 22,000 steps (--config.train.num_steps=22000
in a copy of its workdir; 1 h 38 min alone) reached 3.192, its validation
curve flattening (README). 3.0 needs a wider flow (features 32 here) trained
for far more epochs: work for the GPU machine. Final evaluation (exact
bits/dim of the 10,000 test images, FD on 5,000 samples): 0.6 minutes
on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md).

  python experiments/main.py --config=configs/realnvp.py:digits --workdir=runs/realnvp_digits

is the quick variant (8x8 digits, seconds); the tests run it.

  :gpu  accelerator-sized: features 128 (4x wider coupling nets), batch 256;
        not yet measured on an accelerator (experiments/device_suite.py).
  :cond, :cond_digits  class-conditional: a base distribution per class
        (gen.models.flow.ClassPrior); test bits/dim is log p(x), the mixture
        over classes, beside log p(x | y) given the true class.
"""

from configs import default


def get_config(variant: str = ""):
  config = default.get_config()
  config.data.dequantize = True
  config.model.name = "realnvp"
  config.model.num_scales = 2
  config.model.num_couplings = 3
  config.model.num_final_couplings = 4
  config.model.features = 32
  config.model.num_res_blocks = 2
  config.model.activation = "relu"
  # A base distribution per class when > 0 (:cond).
  config.model.num_classes = 0
  # RealNVP's logit squeeze for 28x28 grey images.
  config.model.logit_alpha = 0.05
  config.train.batch_size = 64
  config.train.num_steps = 9000
  config.train.eval_every = 1500
  config.train.log_every = 100
  config.train.ema_decay = 0.999
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 200
  config.optimizer.schedule = "cosine"
  config.optimizer.grad_clip_norm = 100.0
  config.checkpoint.every_steps = 500
  config.checkpoint.best_metric = "val/bits_per_dim_exact"
  if variant.startswith("cond"):
    config.model.num_classes = 10
  if variant.endswith("digits"):
    default.use_quick_digits(config)
    config.model.num_scales = 1
    config.model.num_couplings = 2
    config.model.num_final_couplings = 2
    config.model.features = 16
    config.model.num_res_blocks = 1
    config.train.ema_decay = 0.0
    config.optimizer.warmup_steps = 0
  elif variant == "gpu":
    # The width this CPU could not afford (16 examples/s here; README).
    config.model.features = 128
    config.train.batch_size = 256
  elif variant not in ("", "cond"):
    raise ValueError(f"--config=configs/realnvp.py:{variant}: unknown variant; "
                     f"valid: digits, gpu, cond, cond_digits (or none)")
  return config

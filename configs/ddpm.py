"""DDPM (Ho et al., 2020) on Fashion-MNIST: a small U-Net, T = 1000, linear betas.

  python experiments/main.py --config=configs/ddpm.py --workdir=runs/ddpm

Reached (2 CPU cores shared with other runs: 50 + 53 minutes of training;
the 6000-step run continued in its workdir to 12000 with the same config,
which resume makes the same as one run): test simple loss 0.0395; 2000 DDIM-50 samples:
classifier FID 120.0 (train-vs-test baseline 7.62), precision/recall
0.800/0.684 (baseline 0.853/0.829), all 10 classes covered (total variation
0.031 to the test labels). At 6000 steps: FID 239.2.

Sized for a 2-core CPU: 28x28 images run
through a U-Net of widths 16/32/64 at 28/14/7 pixels (channel_mults
(1, 2, 4) halve twice, and 28 is a multiple of 4, so nothing is padded),
one residual block per level, self-attention at 7x7; 0.69M parameters,
27 GFLOP per step of 64. Most of a U-Net's cost is at full resolution, so
the width goes to the 7x7 level, where it is cheap: widths 32/64/64 (the
paper's layout scaled down) cost 69 GFLOP per step and trained at half the
steps per second (1.1 vs 2.2 steps/s of a bare gradient, 2 shared cores).
Through experiments/main.py with 2 cores shared with another run it ran
1.9-2.7 steps/s (120-171 examples/s, from the run's log): 12000 steps in
~105 minutes; alone it trains at 214 examples/s
(experiments/benchmarks/sample_benchmark.py), ~60 minutes. Plus ~40 s per validation
and ~80 s for the test evaluation (4 noise levels per image).
End-of-run samples use DDIM with config.eval.sampling_steps = 50 steps
(config.eval.sampler=ancestral runs all 1000). The whole final evaluation
(test loss, FD on 2,000 samples, the ODE likelihood of 500 test images):
4.3 minutes on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md).

Variants (--config=configs/ddpm.py:<variant>):
  digits  8x8 digits, a tiny U-Net and T = 100; seconds. The tests run it.
  gpu     accelerator-sized: Ho et al.'s CIFAR-10 U-Net (channels 128, mults
          1-2-2-2, 2 res blocks, attention at 16x16, 32 groups, dropout 0.1;
          35.7M parameters; 28x28 is reflect-padded to 32x32 inside the U-Net,
          levels 32/16/8/4), batch 128, lr 2e-4; not yet measured on an
          accelerator (experiments/device_suite.py; PyTorch twin: torch_twins' ddpm_ho).
"""

from configs import default


def get_config(variant: str = ""):
  config = default.get_config()
  config.data.scale = "symmetric"
  config.model.name = "unet"
  config.model.channels = 16
  config.model.channel_mults = (1, 2, 4)
  config.model.num_res_blocks = 1
  config.model.attention_resolutions = (7,)
  config.model.dropout = 0.1
  config.model.num_groups = 8
  # Class-conditional when > 0 (configs/flow_matching.py:cond): a class
  # embedding beside the time embedding.
  config.model.num_classes = 0
  # Read by the family (gen.families.ddpm), not the module.
  # The share of labels dropped in training (classifier-free guidance; used
  # only by a conditional model).
  config.model.label_dropout = 0.1
  # eps | v | flow_matching (configs/flow_matching.py).
  config.model.objective = "eps"
  config.model.timesteps = 1000
  config.model.noise_schedule = "linear"
  config.model.beta_start = 1e-4
  config.model.beta_end = 0.02
  config.train.batch_size = 64
  config.train.num_steps = 12000
  config.train.eval_every = 2000
  config.train.log_every = 100
  config.train.ema_decay = 0.999
  config.optimizer.name = "adam"
  # Higher than the paper's 2e-4: a small net and a short CPU budget.
  config.optimizer.learning_rate = 5e-4
  config.optimizer.warmup_steps = 500
  config.optimizer.schedule = "constant"
  config.optimizer.grad_clip_norm = 1.0
  config.checkpoint.every_steps = 1000
  config.checkpoint.best_metric = "val/loss"
  config.eval.batch_size = 200
  config.eval.sampler = "ddim"
  config.eval.sampling_steps = 50
  config.eval.ddim_eta = 0.0
  config.eval.num_images = 64
  config.eval.temperatures = (1.0,)
  # DDIM-50 costs ~0.06 s per sample on 2 CPU cores: 2000 samples ~2 minutes.
  # The train-vs-test baseline is computed at the same count.
  config.eval.fid_samples = 2000
  # Probability-flow bits/dim on 500 test images: 50 Heun steps, 1 probe.
  config.eval.ode_likelihood_images = 500
  if variant == "digits":
    default.use_quick_digits(config)
    config.model.channels = 16
    config.model.channel_mults = (1, 2)
    config.model.attention_resolutions = (4,)
    config.model.timesteps = 100
    # Ho et al.'s betas are for T = 1000; scaled by 1000 / T so that x_{T-1}
    # is as close to N(0, I) (abar = 4e-5) with 10x fewer steps.
    config.model.beta_start = 1e-3
    config.model.beta_end = 0.2
    config.train.ema_decay = 0.0
    config.optimizer.warmup_steps = 0
    config.eval.sampling_steps = 10
    config.eval.ode_likelihood_images = 32
    config.eval.ode_likelihood_steps = 10
  elif variant == "gpu":
    config.model.channels = 128
    config.model.channel_mults = (1, 2, 2, 2)
    config.model.num_res_blocks = 2
    config.model.attention_resolutions = (16,)
    config.model.num_groups = 32
    config.model.dropout = 0.1
    config.train.batch_size = 128
    config.optimizer.learning_rate = 2e-4  # the paper's, for this width
  elif variant:
    raise ValueError(f"--config=configs/ddpm.py:{variant}: unknown variant; "
                     f"valid: digits, gpu (or none)")
  return config

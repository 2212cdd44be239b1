"""Flow matching (Lipman et al., 2023; rectified flow, Liu et al., 2023) on
Fashion-MNIST: DDPM's U-Net (configs/ddpm.py) regressing the velocity of the
straight line from data to noise, t drawn logit-normally (Esser et al., 2024),
sampled by Heun's method.

  python experiments/main.py --config=configs/flow_matching.py --workdir=runs/flow_matching

The same network, batch, optimizer and EMA as configs/ddpm.py, so that the
objectives compare at equal cost (--config.model.objective=eps|v with
configs/ddpm.py gives the other two). Sampling: Heun with 20 steps = 39
network evaluations per sample. What it reached: docs/diffusion.md. Final
evaluation (test loss, FD on 2,000 samples, the ODE likelihood of 500 test
images): 3.6 minutes on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md).

Variants (--config=configs/flow_matching.py:<variant>):
  digits  8x8 digits, a tiny U-Net; seconds. The tests run it.
  gpu     configs/ddpm.py:gpu's U-Net (35.7M parameters) with this objective.
  wide    the sample-quality run of issue 23: widths 32/64/64 (2.5x the
          FLOPs of the default's 16/32/64, 146 against 282 examples/s alone
          on 2 cores of an AMD EPYC with AVX-512), no dropout (a short run
          underfits), 16,000 steps (2.0 hours alone) with the learning rate
          decayed by a cosine, FD at 5,000 samples (the unseen validation
          images that the baseline needs).
  cond    class-conditional: a class embedding beside the time embedding,
          labels dropped 10% of the time, sampled with classifier-free
          guidance (config.eval.guidance_scale; experiments/guidance_sweep.py
          measures FD and conditional accuracy against it).
  cond_digits  the same on 8x8 digits; seconds. The tests run it.
"""

from configs import ddpm


def get_config(variant: str = ""):
  if variant not in ("", "digits", "gpu", "wide", "cond", "cond_digits"):
    raise ValueError(f"--config=configs/flow_matching.py:{variant}: unknown variant; "
                     f"valid: digits, gpu, wide, cond, cond_digits (or none)")
  digits = variant.endswith("digits")
  config = use_flow_matching(ddpm.get_config("digits" if digits else
                                             "gpu" if variant == "gpu" else ""))
  config.eval.sampling_steps = 5 if digits else 20
  if variant.startswith("cond"):
    use_classes(config, 10)
  if variant == "wide":
    config.model.channels = 32
    config.model.channel_mults = (1, 2, 2)
    config.model.dropout = 0.0
    config.train.num_steps = 16000
    config.train.ema_decay = 0.9995
    config.optimizer.schedule = "cosine"
    config.optimizer.end_factor = 0.05
    config.eval.fid_samples = 5000
  return config


def use_classes(config, num_classes: int, label_dropout: float = 0.1,
                guidance_scale: float = 1.0):
  """A diffusion or flow-matching config made class-conditional, with labels
  dropped `label_dropout` of the time for classifier-free guidance."""
  config.model.num_classes = num_classes
  config.model.label_dropout = label_dropout
  config.eval.guidance_scale = guidance_scale
  return config


def use_flow_matching(config):
  """A configs/ddpm.py config turned to flow matching: logit-normal times,
  Heun sampling (configs/latent.py uses it too)."""
  config.model.objective = "flow_matching"
  config.model.time_sampling = "logit_normal"
  config.model.logit_normal_mean = 0.0
  config.model.logit_normal_std = 1.0
  # DDPM's schedule keys mean nothing on the straight line.
  for key in ("timesteps", "noise_schedule", "beta_start", "beta_end"):
    del config.model[key]
  config.eval.sampler = "heun"
  return config

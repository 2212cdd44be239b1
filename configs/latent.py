"""A latent generative model: flow matching on the 7x7x4 codes of an autoencoder.

  python experiments/main.py --config=configs/latent.py --workdir=runs/latent

One command trains both stages: the first (configs/spatial_autoencoder.py) in
runs/first_stage_spatial_autoencoder beside the run, unless that folder
already holds a finished run (a stopped one resumes), then the second: a
U-Net of widths 64/128 at 8x8 and 4x4 (the 7x7 codes are reflect-padded to
8x8) regressing the flow-matching velocity of the standardized codes. Samples
are Heun ODE solutions decoded by the first stage and measured as images;
the report sets the first stage's reconstruction FD beside the samples' FD:
the floor the second stage cannot go below. Reached: FD 26.4 at 5,000
samples (11.5x the real-data baseline of 2.30), both stages 113 minutes on 2
CPU cores; autoguided by :guide (5 more minutes) at scale 1.5, FD 10.1 (4.4x):

  python experiments/main.py --config=configs/latent.py:guide --workdir=runs/latent_guide
  python experiments/sample.py --workdir=runs/latent --guide_workdir=runs/latent_guide \
      --guidance=1.5 --num_samples=1000

The conditional model (:cond with :cond_guide, scale 1.25) reaches FD 8.6
(3.7x); docs/diffusion.md. The final evaluation (FD on 5,000 decoded samples,
the first stage's reconstruction FD beside it): 3.1 minutes
on 2 cores of an AMD EPYC (docs/final_eval_cost_2core_cpu.md).

Variants (--config=configs/latent.py:<variant>):
  digits  8x8 digits: a 2x2x4 code of configs/spatial_autoencoder.py:digits,
          both stages in seconds. The tests run it.
  eps     the same second stage with DDPM's eps objective (cosine schedule),
          for comparison (experiments/nfe_sweep.py). Sampled by DPM-Solver++
          (2M), 20 steps on Karras et al.'s ramp (config.eval.step_spacing),
          from noise level sigma/alpha <= 80 (config.eval.max_noise_level):
          from the schedule's end (2e4) the eps error is amplified 2e4-fold
          (FD 706 instead of 66 with DDIM, 20 steps); on the ramp DPM-Solver++
          gives 42.9 at 10 steps, DDIM 93 (docs/diffusion.md).
  v       the same with v-prediction (the same sampler, ramp and cap).
  guide   a weaker model of the same codes for autoguidance (Karras et al.,
          2024): half the U-Net's width, 2,000 steps. Sample the default
          model guided by it with --guide_workdir (experiments/sample.py,
          guidance_sweep.py) or config.eval.guide_workdir, and
          config.eval.guidance_scale (1.5 on Fashion-MNIST; docs/diffusion.md).
  cond_guide  the same for the conditional model (:cond).
  guide_digits  the guide of :digits (half its width); seconds.
  mlp     flow matching with a residual MLP (gen.models.residual_mlp) on the
          flattened codes in place of the U-Net: several times the examples
          per second on a CPU.
  mlp_digits  the MLP second stage on the digits first stage; seconds.
  cond    class-conditional flow matching on the codes (labels dropped 10% of
          the time; classifier-free guidance by config.eval.guidance_scale).
  cond_digits  the same on the digits first stage; seconds.
  flow    a flow prior: RealNVP (gen.models.flow.RealNVPVector, 8 couplings of
          512-wide MLPs) on the flattened codes; samples at temperature 1.
  flow_digits  the flow prior on the digits first stage; seconds.
  vae_flow     the flow prior on a VAE's codes (configs/conv_vae.py, 32-d),
          trained on posterior draws: the VAE's bound with this learned prior
          is reported beside its bound with N(0, I), ELBO and importance-
          weighted (K=100), in bits/dim.
  vae_flow_digits  the same on 8x8 digits; seconds.
"""

import ml_collections

from configs import ddpm, default, flow_matching

VARIANTS = ("", "digits", "eps", "v", "guide", "guide_digits", "cond_guide", "mlp",
            "mlp_digits", "cond", "cond_digits", "flow", "flow_digits", "vae_flow",
            "vae_flow_digits")


def get_config(variant: str = ""):
  if variant not in VARIANTS:
    raise ValueError(f"--config=configs/latent.py:{variant}: unknown variant; "
                     f"valid: {', '.join(v for v in VARIANTS if v)} (or none)")
  if variant.startswith("flow"):
    return _flow_prior(variant == "flow_digits")
  if variant.startswith("vae_flow"):
    config = _flow_prior(variant == "vae_flow_digits", "configs/conv_vae.py")
    # The importance-weighted bounds, with both priors, on every test image.
    config.eval.iw_samples = 20 if variant == "vae_flow_digits" else 100
    config.eval.iw_chunk = 10 if variant == "vae_flow_digits" else 25
    config.eval.batch_size = 100
    return config
  digits = variant.endswith("digits")
  config = ddpm.get_config("digits" if digits else "")
  config.latent.first_stage = ("configs/spatial_autoencoder.py:digits" if digits
                               else "configs/spatial_autoencoder.py")
  # The data scale is the first stage's; the second stage sees standardized codes.
  config.data.scale = "unit"
  config.model.channels = 64
  config.model.channel_mults = (1, 2)
  config.model.num_res_blocks = 2
  config.model.attention_resolutions = (4,)
  config.model.dropout = 0.0
  config.model.num_groups = 16
  if variant in ("eps", "v"):
    config.model.objective = variant
    config.model.noise_schedule = "cosine"
    config.eval.sampler = "dpmpp_2m"
    config.eval.step_spacing = "karras"
    config.eval.max_noise_level = 80.0
  else:
    flow_matching.use_flow_matching(config)
  config.eval.sampling_steps = 20
  config.train.batch_size = 128
  # 364 examples/s on 2 cores (AMD EPYC, AVX-512): 94 minutes, and the first
  # stage's 6,000 steps 20 more: 113 minutes, FD 26.4 (docs/diffusion.md).
  config.train.num_steps = 16000
  config.train.eval_every = 2000
  config.train.ema_decay = 0.9995
  config.optimizer.learning_rate = 5e-4
  config.optimizer.schedule = "cosine"
  config.optimizer.end_factor = 0.05
  config.eval.fid_samples = 5000
  config.eval.ode_likelihood_images = 0
  if variant.startswith("cond"):
    flow_matching.use_classes(config, 10)
  if variant.startswith("mlp"):
    _use_residual_mlp(config, digits)
  elif digits:
    config.model.channels = 16
    config.model.channel_mults = (1,)
    config.model.num_res_blocks = 1
    config.model.attention_resolutions = ()
    config.model.num_groups = 8
  if digits:
    config.train.batch_size = 32
    config.train.num_steps = 40
    config.train.eval_every = 20
    config.train.ema_decay = 0.0
    config.optimizer.warmup_steps = 0
    config.eval.sampling_steps = 5
    config.eval.fid_samples = 10000
  if "guide" in variant:
    # Errs like the model, more: a quarter of its parameters, an eighth of its steps.
    config.model.channels //= 2
    config.model.num_groups //= 2
    config.train.num_steps //= 8
    config.train.eval_every = config.train.num_steps // 4
    config.eval.fid_samples = 0
  return config


def _use_residual_mlp(config, digits: bool):
  """The second stage as gen.models.residual_mlp, the family's keys kept."""
  kept = {key: config.model[key] for key in config.model
          if key in ("objective", "time_sampling", "logit_normal_mean", "logit_normal_std",
                     "num_classes", "label_dropout")}
  config.model = ml_collections.ConfigDict(dict(name="residual_mlp", **kept))
  config.model.width = 64 if digits else 1024
  config.model.num_blocks = 2 if digits else 6
  config.model.expansion = 2
  config.model.dropout = 0.0


def _flow_prior(digits: bool, first_stage: str = "configs/spatial_autoencoder.py"):
  """RealNVP on the flattened, standardized codes of `first_stage`."""
  config = default.get_config()
  config.latent.first_stage = first_stage + (":digits" if digits else "")
  config.model.name = "realnvp_vector"
  config.model.num_couplings = 8
  config.model.hidden_sizes = (512, 512)
  config.model.activation = "relu"
  config.train.batch_size = 128
  config.train.num_steps = 20000
  config.train.eval_every = 2000
  config.train.ema_decay = 0.999
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 200
  config.optimizer.grad_clip_norm = 1.0
  config.eval.temperatures = (1.0, 0.8)
  config.eval.fid_samples = 5000
  if digits:
    default.use_quick_digits(config)
    config.model.num_couplings = 4
    config.model.hidden_sizes = (32, 32)
    config.eval.fid_samples = 10000
  return config

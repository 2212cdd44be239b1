"""Defaults every other config starts from; each field can be overridden.

  python experiments/main.py --config=configs/default.py --workdir=runs/default \
      --config.train.num_steps=200

Every key that exists anywhere in the project's configs exists here, so a
misspelled key is caught by `gen.config.validate` instead of being ignored.
Model-specific keys live in `config.model` and are checked against the model
chosen by `config.model.name`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  # fashion_mnist | digits | toy2d | image_folder (config.data.dir: your own
  # images, gen/data/image_folder.py) | any TFDS image dataset (mnist, cifar10, ...).
  config.data.name = "fashion_mnist"
  # Where the files are; "" = the source's default (Debian's package for
  # fashion_mnist, TFDS's data dir for TFDS names).
  config.data.dir = ""
  # image_folder only: resize (shorter side) and center-crop to this square
  # size (0 = keep; all images must then share one size); 1 (grey) or 3 (RGB)
  # channels (0 = RGB if any image has colour); the test share carved with
  # validation_seed when the folder has no train/ and test/; skip unreadable
  # or non-image files (counted in the log) instead of stopping; where the
  # decoded images are cached ("" = <dir>/.gen_cache).
  config.data.image_size = 0
  config.data.channels = 0
  config.data.test_fraction = 0.1
  config.data.skip_bad_files = False
  config.data.cache_dir = ""
  # Carved from the train split with validation_seed, which is not config.seed,
  # so runs with different seeds are validated on the same examples.
  config.data.validation_size = 5000
  config.data.validation_seed = 0
  # unit: [0, 1]; symmetric: [-1, 1].
  config.data.scale = "unit"
  # none | dynamic (fresh Bernoulli draw every step) | static (one fixed draw per example).
  config.data.binarize = "none"
  # Uniform dequantization: (pixel + u) / 256, u ~ U[0, 1), in training.
  config.data.dequantize = False
  # Batches prepared ahead of the device by a background thread.
  config.data.prefetch = 2
  config.data.toy2d = ml_collections.ConfigDict()
  config.data.toy2d.density = "ring8"  # ring8 | moons | checkerboard
  config.data.toy2d.num_train = 50_000
  config.data.toy2d.num_test = 10_000
  # Noise scale of the density; None = the density's own default.
  config.data.toy2d.noise = ml_collections.config_dict.placeholder(float)

  config.model = ml_collections.ConfigDict()
  config.model.name = "dense_autoencoder"

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128
  config.train.num_steps = 5000
  config.train.eval_every = 500
  config.train.log_every = 100
  # Train steps run inside one compiled call (lax.scan): fewer dispatches.
  # num_steps, eval_every, log_every and checkpoint.every_steps must be multiples.
  # "auto": what was measured fastest for this model on this backend
  # (gen/platform.py; the run logs the value and the measurement).
  config.train.steps_per_call = _integer_or_auto()
  # Up to this many of those steps are laid out one after another instead of in
  # a while loop: XLA:CPU runs convolutions in a loop ~3x slower, but compile
  # time and memory grow with it. 1 = always a loop (when steps_per_call > 1).
  # "auto": 10 on CPU, 1 (a rolled loop) on GPU and TPU.
  config.train.unroll_steps = _integer_or_auto()
  # The dtype the networks compute in: float32 | bfloat16. Parameters and
  # optimizer state stay float32; normalization statistics, attention
  # softmax, losses, log-determinants, log-likelihoods and bits/dim are
  # float32 in both (README, "Mixed precision").
  config.train.compute_dtype = "float32"
  # 0 disables the exponential moving average of parameters.
  config.train.ema_decay = 0.0
  # On a non-finite loss or gradient: False stops the run, True skips the update.
  config.train.skip_nonfinite = False

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 1000
  # Images in each PNG grid of reconstructions or samples.
  config.eval.num_images = 64
  # Sampling temperatures of the end-of-run sample grids (flows, VAEs): the
  # prior's standard deviation is multiplied by each.
  config.eval.temperatures = (1.0, 0.8, 0.6)
  # Importance samples K of a VAE's test log p(x) estimate at the end of a
  # run (0 = skip it), drawn iw_chunk at a time to bound memory.
  config.eval.iw_samples = 1000
  config.eval.iw_chunk = 50
  # Sample quality in the features of a classifier of the dataset
  # (gen.evaluate.fidelity): "auto" = the one experiments/train_classifier.py
  # writes to runs/classifiers/<data.name>; a workdir path; "" = skip.
  config.eval.classifier = "auto"
  # Samples drawn for the Frechet distance, KID, precision/recall and class
  # histogram; the train-vs-test baseline uses the same count. 0 = skip.
  config.eval.fid_samples = 10000
  # Nearest neighbour k of the precision/recall manifolds (Kynkaanniemi et al., 2019).
  config.eval.pr_neighbours = 3
  # A file of Inception-v3 weights (see gen/evaluate/inception.py); when set,
  # Inception FID is computed through the same code path. "" = skip.
  config.eval.inception_weights = ""
  # Diffusion and flow-matching samplers (gen.diffusion.samplers): auto |
  # ancestral | ddim | heun | dpmpp_2m (eps, v) and auto | heun | euler (flow
  # matching); "auto" = ddim for eps and v, heun for flow matching. Then the
  # sampler's steps (ancestral runs all T) and DDIM's eta (0 = deterministic,
  # 1 = as noisy as ancestral sampling).
  config.eval.sampler = "auto"
  config.eval.sampling_steps = 50
  config.eval.ddim_eta = 0.0
  # Classifier-free guidance of a class-conditional diffusion or flow-matching
  # model (config.model.num_classes > 0): prediction = unconditional + scale *
  # (conditional - unconditional); 1 = the conditional model, 0 = unconditional.
  config.eval.guidance_scale = 1.0
  # Autoguidance (Karras et al., 2024; gen/families/guide.py): a run or bundle
  # of a weaker model of the same data (smaller, trained shorter) whose
  # output guides this one's: guide + guidance_scale * (model - guide). It
  # then takes the place of classifier-free guidance. "" = none.
  config.eval.guide_workdir = ""
  # Guidance in a limited interval (Kynkaanniemi et al., 2024): (low, high)
  # noise levels sigma / alpha (the VE sigma: 0 at the data, inf at pure
  # noise) inside which the guidance scale applies; outside it the model is
  # unguided (scale 1). () = guide at every level.
  config.eval.guidance_interval = ()
  # eps and v samplers start at the last step whose noise level sigma / alpha
  # is at most this (EDM's sigma_max is 80); 0 = at the schedule's end. An
  # eps network's error reaches x_0 times sigma / alpha: the cosine schedule
  # ends at 2e4 and needs the cap; the linear one ends at 152.
  config.eval.max_noise_level = 0.0
  # How the eps and v samplers space their steps (ancestral runs them all):
  # "uniform" in t, or "karras", even in (sigma / alpha)^(1/7) (Karras et
  # al., 2022: short steps at high noise).
  config.eval.step_spacing = "uniform"
  # Bits/dim of diffusion and flow-matching models through the probability-
  # flow ODE (gen.diffusion.likelihood), an estimate on the first this many
  # test images (0 = skip): Heun's method with this many fixed steps, and
  # Hutchinson's trace estimator with this many probes per image.
  config.eval.ode_likelihood_images = 0
  config.eval.ode_likelihood_steps = 50
  config.eval.ode_likelihood_probes = 1

  # A latent model (configs/latent.py, gen.families.latent): config.model
  # then names the second stage, trained on the codes of this first stage.
  config.latent = ml_collections.ConfigDict()
  # The first stage's config file ("configs/spatial_autoencoder.py[:variant]");
  # "" = not a latent model.
  config.latent.first_stage = ""
  # Where the first stage is (or is trained first, when it holds no finished
  # run); "" = runs/first_stage_<config name> beside the run's workdir.
  config.latent.first_stage_workdir = ""

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"  # sgd | adam | adamw | adadelta | rmsprop
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "constant"  # constant | cosine
  # Linear warm-up from 0, in front of any schedule.
  config.optimizer.warmup_steps = 0
  # Cosine decays to learning_rate * end_factor.
  config.optimizer.end_factor = 0.0
  config.optimizer.momentum = 0.9  # sgd, rmsprop (0 = none)
  config.optimizer.nesterov = False  # sgd
  config.optimizer.b1 = 0.9  # adam, adamw
  config.optimizer.b2 = 0.999  # adam, adamw
  config.optimizer.eps = 1e-8  # adam, adamw, rmsprop
  config.optimizer.weight_decay = 1e-4  # adamw
  config.optimizer.rho = 0.9  # adadelta, rmsprop (decay of the squared-gradient average)
  config.optimizer.adadelta_eps = 1e-6  # adadelta
  # Clip gradients to this global norm; 0 disables.
  config.optimizer.grad_clip_norm = 0.0

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 1000
  # Keep the last `keep` checkpoints and, besides them, the best one.
  config.checkpoint.keep = 3
  config.checkpoint.best_metric = "val/loss"
  config.checkpoint.best_mode = "min"  # min | max
  return config


def _integer_or_auto():
  """A field that holds "auto" or an integer (a plain "auto" would type it str)."""
  return ml_collections.FieldReference("auto", field_type=object)


def use_quick_digits(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The seconds-long run on 8x8 digits that every config's `:digits` variant
  (and the tests) use: 40 steps at batch 32, evaluated and checkpointed often."""
  config.data.name = "digits"
  config.data.validation_size = 200
  config.train.batch_size = 32
  config.train.num_steps = 40
  config.train.eval_every = 20
  config.train.log_every = 10
  config.eval.batch_size = 64
  config.eval.num_images = 16
  config.checkpoint.every_steps = 10
  return config

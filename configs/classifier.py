"""The dataset classifier whose features sample-quality metrics use.

  python experiments/train_classifier.py                       # fashion_mnist
  python experiments/train_classifier.py --config=configs/classifier.py:digits

writes runs/classifiers/<data.name>, where every run's evaluation looks for
it (config.eval.classifier="auto"). Target on Fashion-MNIST: >= 90% test
accuracy; measured: see README ("Sample quality"). Final evaluation
(test accuracy): seconds.
"""

from configs import default


def get_config(variant: str = ""):
  config = default.get_config()
  config.model.name = "cnn_classifier"
  config.model.num_classes = 10
  config.model.channels = (32, 64)
  config.model.feature_size = 128
  config.model.dropout = 0.3
  config.train.batch_size = 128
  config.train.num_steps = 4000  # ~9 epochs of the 55k train images
  config.train.eval_every = 1000
  config.train.log_every = 200
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  config.optimizer.weight_decay = 1e-4
  config.checkpoint.every_steps = 1000
  config.checkpoint.best_metric = "val/accuracy"
  config.checkpoint.best_mode = "max"
  config.eval.num_images = 0
  config.eval.fid_samples = 0  # a classifier has no samples
  if variant == "digits":
    default.use_quick_digits(config)
    config.model.channels = (16,)
    config.model.feature_size = 32
    config.train.num_steps = 300
    config.train.eval_every = 100
    config.checkpoint.every_steps = 100
    config.optimizer.warmup_steps = 0
    config.eval.num_images = 0
  elif variant:
    raise ValueError(f"--config=configs/classifier.py:{variant}: unknown variant; "
                     f"valid: digits (or none)")
  return config

"""Your own images: `config.data.name = "image_folder"`, `config.data.dir = <folder>`.

Layouts:
  <dir>/<class>/*.png|jpg   one subfolder per class: labelled by the sorted
                            subfolder names;
  <dir>/*.png|jpg           images directly in it: no labels;
  <dir>/train/..., <dir>/test/...   either of the above in each: those splits;
                            otherwise a test split of config.data.test_fraction
                            is carved with config.data.validation_seed.

Every image is decoded once (PIL), converted to config.data.channels (1 =
grey, 3 = RGB, 0 = RGB if any image has colour, else grey), and, with
config.data.image_size = s > 0, resized so its shorter side is s and
center-cropped to s x s; with 0, all images must share one size. The decoded
uint8 arrays are cached (config.data.cache_dir, default <dir>/.gen_cache) under
a key made of the files' names, sizes and modification times and those
settings, so a second run does not decode again and a changed folder is
decoded anew. A file that is not a readable PNG or JPEG is an error naming it,
or, with config.data.skip_bad_files, skipped and counted in the log.
"""

from __future__ import annotations

import hashlib
import json
import os

import ml_collections
import numpy as np
from absl import logging

from gen.data.base import ArraySource, SourceInfo
from gen.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_CACHE_VERSION = 1


def _listing(folder: str) -> tuple[list[tuple[str, int]], list[str]]:
  """([(relative path, label)], class names) of the files under `folder`; files
  in class subfolders get the subfolder's index, files directly in it -1."""
  entries = sorted(e for e in os.listdir(folder) if not e.startswith("."))
  classes = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
  files = [(e, -1) for e in entries if os.path.isfile(os.path.join(folder, e))]
  for index, name in enumerate(classes):
    for root, dirs, names in os.walk(os.path.join(folder, name)):
      dirs[:] = sorted(d for d in dirs if not d.startswith("."))
      for file in sorted(n for n in names if not n.startswith(".")):
        files.append((os.path.relpath(os.path.join(root, file), folder), index))
  if files and classes and any(label < 0 for _, label in files):
    loose = [path for path, label in files if label < 0][:3]
    raise UserError(f"config.data.dir={folder!r} mixes class subfolders with images "
                    f"directly in it ({', '.join(loose)}): use one layout")
  return files, classes


def _decode(path: str, channels: int, size: int) -> np.ndarray:
  from PIL import Image
  with Image.open(path) as image:
    image = image.convert("L" if channels == 1 else "RGB")
    if size:
      width, height = image.size
      scale = size / min(width, height)
      image = image.resize((max(size, round(width * scale)), max(size, round(height * scale))),
                           Image.Resampling.BICUBIC)
      width, height = image.size
      left, top = (width - size) // 2, (height - size) // 2
      image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, np.uint8)
  return pixels[..., None] if pixels.ndim == 2 else pixels


def _has_colour(path: str) -> bool:
  from PIL import Image
  with Image.open(path) as image:
    return image.mode not in ("L", "LA", "1", "I", "I;16", "F")


def _cache_key(folder: str, files, data_config) -> str:
  digest = hashlib.sha256()
  digest.update(json.dumps([_CACHE_VERSION, data_config.image_size, data_config.channels,
                            data_config.skip_bad_files]).encode())
  for path, label in files:
    stat = os.stat(os.path.join(folder, path))
    digest.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()[:20]


def _read_folder(folder: str, data_config: ml_collections.ConfigDict):
  """(images [n, h, w, c] uint8, labels [n] int32 (-1 = none), class names)."""
  files, classes = _listing(folder)
  bad = [p for p, _ in files if not p.lower().endswith(IMAGE_EXTENSIONS)]
  if bad and not data_config.skip_bad_files:
    raise UserError(f"{os.path.join(folder, bad[0])}: not a PNG or JPEG file (set "
                    f"config.data.skip_bad_files=True to skip such files)")
  files = [(p, label) for p, label in files if p.lower().endswith(IMAGE_EXTENSIONS)]
  if not files:
    raise UserError(f"config.data.dir={folder!r}: no PNG or JPEG images in it (or in "
                    f"class subfolders)")
  cache_dir = data_config.cache_dir or os.path.join(folder, ".gen_cache")
  cache = os.path.join(cache_dir, f"images_{_cache_key(folder, files, data_config)}.npz")
  if os.path.exists(cache):
    with np.load(cache) as stored:
      return stored["x"], stored["label"], [str(c) for c in stored["classes"]]
  channels = data_config.channels
  if channels not in (0, 1, 3):
    raise UserError(f"config.data.channels={channels}: 1 (grey), 3 (RGB) or 0 (as found)")
  if channels == 0:
    channels = 3 if any(_has_colour(os.path.join(folder, p)) for p, _ in files) else 1
  images, labels, skipped = [], [], []
  for path, label in files:
    try:
      images.append(_decode(os.path.join(folder, path), channels, data_config.image_size))
      labels.append(label)
    except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
      if not data_config.skip_bad_files:
        raise UserError(f"{os.path.join(folder, path)}: cannot be read as an image "
                        f"({error}); set config.data.skip_bad_files=True to skip such "
                        f"files") from None
      skipped.append(path)
  if skipped or bad:
    logging.warning("%s: skipped %d files that are not readable PNG or JPEG images "
                    "(config.data.skip_bad_files), e.g. %s", folder, len(skipped) + len(bad),
                    ", ".join((skipped + bad)[:3]))
  shapes = sorted({image.shape for image in images})
  if len(shapes) > 1:
    raise UserError(f"config.data.dir={folder!r}: images of {len(shapes)} sizes ("
                    f"{', '.join('x'.join(map(str, s[:2])) for s in shapes[:4])}); set "
                    f"config.data.image_size to resize and crop them to one")
  x, label = np.stack(images), np.asarray(labels, np.int32)
  try:
    os.makedirs(cache_dir, exist_ok=True)
    temporary = cache + ".tmp.npz"
    np.savez(temporary, x=x, label=label, classes=np.asarray(classes, dtype=str))
    os.replace(temporary, cache)
  except OSError as error:  # a read-only folder: decode again next time
    logging.warning("could not cache the decoded images in %s: %s (set "
                    "config.data.cache_dir)", cache_dir, error)
  return x, label, classes


def load(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
  """The `split` ("train" or "test") of the image folder config.data.dir."""
  folder = data_config.dir
  if not folder or not os.path.isdir(folder):
    raise UserError(f"config.data.dir={folder!r}: config.data.name='image_folder' needs "
                    f"a folder of images")
  folder = os.path.abspath(folder)
  has_splits = all(os.path.isdir(os.path.join(folder, s)) for s in ("train", "test"))
  if has_splits:
    x, label, classes = _read_folder(os.path.join(folder, split), data_config)
    other_classes = _listing(os.path.join(folder, "test" if split == "train" else "train"))[1]
    if classes != other_classes:
      raise UserError(f"config.data.dir={folder!r}: train/ and test/ have different class "
                      f"subfolders ({classes} against {other_classes})")
  else:
    x, label, classes = _read_folder(folder, data_config)
    fraction = data_config.test_fraction
    if not 0.0 < fraction < 1.0:
      raise UserError(f"config.data.test_fraction={fraction}: must be in (0, 1)")
    order = np.random.default_rng(data_config.validation_seed).permutation(len(x))
    num_test = max(1, int(round(fraction * len(x))))
    rows = np.sort(order[:num_test] if split == "test" else order[num_test:])
    x, label = x[rows], label[rows]
  info = SourceInfo("image_folder", tuple(x.shape[1:]), "image", len(classes),
                    tuple(classes))
  return ArraySource(info, x, np.maximum(label, 0))

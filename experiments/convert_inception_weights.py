"""pytorch-fid's FID Inception weights (.pth) -> the .npz that gen reads.

  python experiments/convert_inception_weights.py \
      --input=pt_inception-2015-12-05-6726825d.pth --output=inception_fid.npz

Needs PyTorch, on whichever machine runs it (gen itself never does). The file
is https://github.com/mseitzer/pytorch-fid/releases (fid_weights); fetch it
yourself, nothing here downloads. The .npz keeps PyTorch's names and layouts
(see gen/evaluate/inception.py) and is checked with `load_params` once written.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import app, flags

_INPUT = flags.DEFINE_string("input", "pt_inception-2015-12-05-6726825d.pth",
                             "pytorch-fid's FID Inception state dict.")
_OUTPUT = flags.DEFINE_string("output", "inception_fid.npz", "Where to write the .npz.")


def main(argv):
  del argv
  try:
    import torch  # only here: gen does not depend on PyTorch
  except ImportError:
    sys.exit("convert_inception_weights needs PyTorch (pip install torch) to read "
             f"{_INPUT.value}; or run this script, or the one-liner in "
             "gen/evaluate/inception.py, on a machine that has it and copy the .npz.")
  state_dict = torch.load(_INPUT.value, map_location="cpu")
  if not isinstance(state_dict, dict):
    sys.exit(f"{_INPUT.value} holds a {type(state_dict).__name__}, not a state dict.")
  np.savez(_OUTPUT.value, **{k: v.detach().cpu().numpy() for k, v in state_dict.items()})

  from gen.evaluate import inception
  inception.load_params(_OUTPUT.value)  # raises, naming the keys, if it is not the FID Inception
  print(f"wrote {_OUTPUT.value}: {len(state_dict)} arrays; "
        f"load with gen.evaluate.inception.load_feature_fn({_OUTPUT.value!r})")


if __name__ == "__main__":
  app.run(main)

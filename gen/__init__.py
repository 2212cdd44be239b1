"""gen: five families of generative models on one functional core.

Importing gen sets XLA:CPU's flags measured for this code on a CPU-only JAX
(gen/platform.py, CPU_XLA_FLAGS), before JAX starts its backends.
"""

from gen import platform as _platform

_platform.use_cpu_xla_flags()

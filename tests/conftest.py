"""Test-session configuration: every test runs in float64.

jaxmoe never flips JAX's global configuration at import (README, "Architecture"); the test
suite opts in here, before any test module builds an array.
"""

import jax

jax.config.update("jax_enable_x64", True)

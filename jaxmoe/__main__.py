"""`python -m jaxmoe` is the `jaxmoe` command."""

import sys

from .cli import main

sys.exit(main())

"""`python -m archlab.cli` (as torchrun starts it) is the `archlab` command."""
import sys

from archlab.cli import main

sys.exit(main())

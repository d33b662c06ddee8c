"""`python -m cadenza`: the same as the `cadenza` command."""

import sys

from cadenza.cli.main import main

sys.exit(main())

"""``python -m geokv``: the same as the ``geokv`` command."""

import sys

from geokv.cli.main import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m coarch`: the same as the `coarch` command."""

import sys

from coarch.cli import main

if __name__ == "__main__":
    sys.exit(main())

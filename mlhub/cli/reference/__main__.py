"""``python -m mlhub.cli.reference``: write every generated doc."""

import sys

from mlhub.cli.reference import main

sys.exit(main())

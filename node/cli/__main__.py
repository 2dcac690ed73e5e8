# `python -m node.cli`: the `dicomnode` command.
import sys

from node.cli import main

sys.exit(main())

# `python -m node.acceptor`: one acceptor process of the cluster.
import sys

from node.acceptor.main import main

sys.exit(main())

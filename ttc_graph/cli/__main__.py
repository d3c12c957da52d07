"""``python -m ttc_graph.cli``: the ``ttc`` command line."""

from ttc_graph.cli.main import main

main()

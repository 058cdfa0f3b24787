"""The ``segdeploy`` command: ``main`` plus one module per subcommand (the only argparse code)."""

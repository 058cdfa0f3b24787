"""One module per CLI subcommand; see segdeploy.cli."""

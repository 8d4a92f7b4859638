"""One module per subcommand; qdiag/cli.py only parses and dispatches."""

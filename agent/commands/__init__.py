"""One module per `dock-agent` command: add_parser(subparsers) and run(args) -> exit code."""

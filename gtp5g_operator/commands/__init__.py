"""The command line's subcommands other than `run`: `status` (and `doctor`)."""

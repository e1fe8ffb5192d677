"""Subcommands that plug into the rsdata CLI (see rsdata.cli.EXTRA_COMMANDS)."""

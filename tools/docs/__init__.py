"""Generated documentation: docs/cli.md from the command-line parsers."""

"""One module per ``amnesia`` subcommand; shared option groups live in :mod:`pipelines.options`."""

"""The ``mlhub`` command line (Typer). Entry point: :func:`mlhub.cli.main.run`."""

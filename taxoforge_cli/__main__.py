"""``python -m taxoforge_cli``: the ``taxoforge`` command."""

from taxoforge_cli.main import main

main()

"""``python -m hepaudit``: the same command line as the ``hepaudit`` script (for batch systems
where the environment's bin folder is not on PATH)."""

from hepaudit.cli import main

main()

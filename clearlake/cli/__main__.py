"""`python -m clearlake.cli` is the `clearlake` command."""

from clearlake.cli import main

main()

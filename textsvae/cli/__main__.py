"""`python -m textsvae.cli ...` is the `textsvae` command."""
from . import main

main()

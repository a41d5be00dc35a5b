"""`python -m titok_cli ...` (and `torchrun ... -m titok_cli ...`) runs the `titok` command."""

from .cli.app import main

main()

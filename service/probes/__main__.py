"""`python -m service.probes …`: see service.probes.cli."""

from service.probes.cli import main

main()

"""`python -m service` runs the same CLI as the `warden` script."""

from service.cli import main

main()

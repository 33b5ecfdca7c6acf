"""`python -m warden` runs the same CLI as the `warden` script."""

from warden.cli import main

main()

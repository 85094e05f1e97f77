"""`python -m fleetd`: the same as the `fleetd` command."""

from fleetd.cli import main

if __name__ == "__main__":
    main()

"""`python -m fleetctl`: the same as the `fleetctl` command."""

from fleetctl.app import main

if __name__ == "__main__":
    main()

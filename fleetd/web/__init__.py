"""The web role: the dashboard, the HTTP API and /metrics, a client of the control socket and
the recorder's feed (like fleetctl), never of a database."""

"""`gtp5g-operator doctor`: check everything the service needs, and change nothing.

One module per group of checks (config, environment with identity, trace,
targets, api with boost, cpu_wait, scheduler, service), each returning
`model.Check` records over the daemon's own code; `output` formats them
(pure); `runner` runs the groups in order.  Nothing here writes a strategy,
touches a tracefs setting or reads a trace line.
"""

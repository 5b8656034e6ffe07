"""`gtp5g-operator doctor`: check everything the service needs, and change nothing.

One module per group of checks (config, environment, trace, targets, api,
scheduler, service), each returning `model.Check` records; `output` formats
them (pure); `runner` runs the groups in order.  Nothing here writes a
strategy, touches a tracefs setting or reads a trace line.
"""

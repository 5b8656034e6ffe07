"""gtp5g-operator: boost the live nr-gnb tasks seen in trace_pipe via the Gthulhu API."""

__version__ = "0.2.0"

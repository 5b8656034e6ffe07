"""The program's first code: `python3 -m gtp5g_operator` and the gtp5g-operator command
(pyproject's script).  Kept light on purpose: see `entry`."""

import signal

# What the daemon's signals mean other than a stop (service/signals.py), yet kill by default.
RELOAD_REPORT_DEBUG = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def entry() -> None:
    # Held before anything is imported: importing the command line takes 0.1 s (more under
    # the unit's CPUQuota=), and a SIGHUP, SIGUSR1 or SIGUSR2 then (`systemctl kill -s HUP`
    # or a state report right after a restart) ended the process by its default action,
    # before cli.py's own hold.  cli.main gives the mask back to every other command.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, RELOAD_REPORT_DEBUG)
    from gtp5g_operator.cli import entry as run

    run(held)


if __name__ == "__main__":
    entry()

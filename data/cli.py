"""What every command line of the project shares: its ``--help`` layout."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, except where there is none to show.

    An option whose default is ``None`` is decided by a rule its help text states, and a flag's
    default is off: ``(default: None)`` and ``(default: False)`` would say nothing.
    """

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)

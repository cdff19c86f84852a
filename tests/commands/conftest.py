"""Puts tests/commands on sys.path: its tests share the `cli_server` helper
(the test directories are not packages)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

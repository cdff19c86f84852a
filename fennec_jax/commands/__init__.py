"""Command-line commands of `fennec`; each module defines its own absl flags.

Never import these from library code: importing one defines flags.
"""

"""`python -m facevid` runs the command-line tool."""

from facevid.cli import main

main()

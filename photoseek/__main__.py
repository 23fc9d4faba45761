"""`python -m photoseek ...`: the command line."""

from photoseek.cli import console_main

console_main()

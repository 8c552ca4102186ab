"""Small trainables for the worker's tests: Python functions in `toy`, a command-line program in `lines`."""

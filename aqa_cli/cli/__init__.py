"""Layer 9: the command line: the Typer app, one thin function per command, and terminal output. The only
layer that prints."""

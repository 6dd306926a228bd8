"""The ``dispatcher`` command line (internal): parse, build settings, call one library function, render."""

"""Redis operations written once as generators (see ``dispatcher.gateway``), grouped by what they touch."""

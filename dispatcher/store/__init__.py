"""The Redis layer (internal): key names, the wire codec, Lua scripts, the gateway that sends commands, and the
operations (command generators) of each data structure. Nothing outside this package builds a key, calls msgpack
or sends a command."""

"""The ``ray-apps`` command: thin sub-commands that parse, call the library and print."""

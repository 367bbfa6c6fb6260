"""What serve and consume share, whatever they serve: starting and ending a process
(:mod:`.process`), listening sockets, logging, start-up tasks, the probes and their
state, the debugger attach."""

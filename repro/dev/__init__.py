"""`repro dev`: a warm worker that keeps torch, Lightning and the paper's built datamodule alive
and runs each gate in a fork of itself, so an edit to the model shows its verdict in about a
second and is recorded exactly as `repro stage` records it.

protocol.py  where the socket lives and what travels over it
warm.py      the slow state the worker pays for once (imports, the set-up datamodule)
fresh.py     fresh paper code in a warm process (forget imported modules, hash-checked bytecode)
child.py     one request in a forked child: the client's terminal, fresh code, the runner
worker.py    the long-lived parent: socket, fork, reap, rebuild the warm data, --watch
watch.py     which files of the paper and its config changed
client.py    `repro stage` handing its request to a running worker
"""

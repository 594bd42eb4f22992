"""Process lifetime: what happens to a command and its children when it is stopped or killed.

- `stop`: SIGTERM and SIGINT handled the same way by every command (also when the command was
  started with SIGINT ignored, as `cmd &` in a script and `nohup` do); long loops defer them to a
  safe point (training: the next step boundary, then a checkpoint).
- `children`: a child process ends within about a second of its parent's death, however the
  parent died (`kill -9` included): forked decode workers and the UI's training subprocess.
- `locks`: the locks a command holds are never inherited by its forked children, so a child
  that outlives its parent for a moment cannot keep the lock.
"""

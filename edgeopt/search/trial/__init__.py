"""One trial: the objective, the child process that builds it, and their protocol."""

"""What to try next: the composed search space, expert seeds, successive halving."""

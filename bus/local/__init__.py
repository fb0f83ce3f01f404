"""Running busway on one machine: a private redis-server and `bus up`."""

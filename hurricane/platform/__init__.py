"""What serve and consume share, whatever they serve: listening sockets and logging."""

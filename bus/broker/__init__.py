"""The broker: HTTP and AWS APIs in, PutEvents ingest, routing events to targets."""

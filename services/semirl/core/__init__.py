"""Small shared plumbing: streams, checkpoint store, gRPC helpers, embedded Redis, run state."""

"""Generated protobuf and gRPC stubs for proto/semirl/v1 (do not edit; run `make proto`)."""

"""The data plane: render a host's desired state as ``table inet stockade`` and apply it."""

"""The host contract in one place: what a host (a sandbox host, a real machine) and the
control plane say to each other.

- :mod:`stockade.hosts.wire`: the wire format of snapshots, deltas and placements and its
  decoding into :mod:`stockade.model` values (:class:`~stockade.hosts.wire.View` is what one
  host knows);
- :mod:`stockade.hosts.client`: one HTTP client for the agent endpoints, over several
  control-plane servers, failing over with backoff and jitter.
"""

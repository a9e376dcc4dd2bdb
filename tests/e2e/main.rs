//! End-to-end tests: the real `fanout` binary on loopback with real peers.

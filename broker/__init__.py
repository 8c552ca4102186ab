"""rung's broker: the event loop on the head node, the worker registry, the journal and the
checkpoint store. Installed as `rung.broker`."""

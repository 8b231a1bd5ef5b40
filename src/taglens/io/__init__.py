"""What taglens reads and writes: images decoded once (`decode`), what to read (`inputs`,
`locations`), what to write (`sinks`, `arrow`, `captions`), resuming (`resume`) and files that
appear only when complete (`atomic`)."""

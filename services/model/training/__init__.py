"""Training jobs: domain types, the bars a job reads, the runner and its worker process, use cases and store."""

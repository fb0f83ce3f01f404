"""The worker: takes deliveries from the store and runs them through invokers, like Lambda."""

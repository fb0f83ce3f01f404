"""What operators see: Prometheus metrics, queue gauges, the live trace and `bus tail`."""

"""What Sentinel generates from the model: Grafana dashboards (and their sync), links,
Prometheus rule export.
"""

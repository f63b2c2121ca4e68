"""Query planning: the PromQL and LogQL each SLO needs, with every label value escaped."""

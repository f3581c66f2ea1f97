"""How steps run under Prefect and MLflow: the step task, its cache policy, the Prefect home, tracking."""

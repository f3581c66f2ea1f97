"""Release: from a run's pick to devices. `registry` (MLflow's model registry), `decision` (the release
decisions), `fleet` (the S3 bucket), `signing` and `manifest` (what is published and what a device checks),
`channel` (what the signer trusts of a channel), `promote` (publish, roll back), `updater` (verify as a
device does). flows/promote.py and flows/reoptimize.py run them as Prefect flows."""

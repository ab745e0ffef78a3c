"""Deployment artefacts that are generated from Python: the Helm chart's values model and its JSON schema.

`semirl.deploy.values.ChartValues` is the single definition of deploy/helm/semirl/values.yaml: its defaults are
the chart's defaults (a test checks that values.yaml equals `ChartValues()` dumped by alias), and
`python -m semirl.deploy.schema` writes values.schema.json from it.
"""

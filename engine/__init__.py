"""mq-runbooks: incident-response runbooks for message systems, as Prefect flows.

One import package over the source folders (setuptools `package-dir`), in layers that import
downwards only:

    mq_runbooks.app           engine/app/      CLI, HTTP (alerts, Slack, review pages), serve, demo
    mq_runbooks.flows         flows/           one module per runbook: parameters and its steps
    mq_runbooks.kit           engine/kit/      the driver every runbook runs through, journal, gate, lock,
                                               notifier, postmortem drafting
    mq_runbooks.integrations  integrations/    one module per outside system; no Prefect
    mq_runbooks.base          engine/base/     errors, settings, clusters.yaml, the catalog loader
    mq_runbooks.runbooks      runbooks/        the default catalog (YAML, package data)
    mq_runbooks.postmortems   postmortems/     the postmortem templates (package data)
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mq-runbooks")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"

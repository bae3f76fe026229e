"""mq-runbooks: incident-response runbooks for message systems, as Prefect flows.

One import package: this folder holds base, kit, app and the catalog (runbooks/); flows/ and
integrations/ are mapped into it (setuptools `package-dir`). Layers import downwards only:

    mq_runbooks.app           mq_runbooks/app/    CLI, HTTP (alerts, Slack, review pages), serve, demo
    mq_runbooks.flows         flows/              one module per runbook: parameters and its steps
    mq_runbooks.kit           mq_runbooks/kit/    the driver every runbook runs through, journal, gate,
                                                  lock, notifier; postmortem/ drafts (templates inside);
                                                  gateway/, the one module that talks to Prefect
    mq_runbooks.integrations  integrations/       one module per outside system; no Prefect
    mq_runbooks.base          mq_runbooks/base/   errors, settings, clusters.yaml, the catalog loader
    mq_runbooks.runbooks      runbooks/           the default catalog (YAML, package data)
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mq-runbooks")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"

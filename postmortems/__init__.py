"""Postmortem templates (templates/*.j2, package data). Drafts written at run time go elsewhere."""

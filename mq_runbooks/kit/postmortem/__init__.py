"""Postmortems: what a run recorded (records), the context a draft renders from (context), its
rendering and scrubbing (render), the draft of one run or of an incident's runs (draft, incident),
the drafts on disk (store), edits from the review page (edit), and attaching a draft to its run
(publish). The templates are in templates/."""

"""`semirl sweep`: one spec at several settings and seeds, run one after another on a stack, summarised as a table
(Markdown + JSON) and PNG plots in a results directory that a re-run resumes (docs/architecture.md, decision 43)."""

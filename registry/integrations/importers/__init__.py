"""Bringing models over from another registry: the half (plan.py, apply.py) that does not care which one.

An importer (``mlflow.py``) reads its source into a :class:`plan.ModelPlan` per model: each
version's card fields, its files (already downloaded, named as they will be in the
version folder) and the stage it holds there. :func:`apply.apply` turns a plan into commits on
the model's own review branch.

An import is an ordinary registration: the branch registers versions (and model.yaml's
importer-owned tags), never stages. The stages the source gives are returned as the
`registry promote` commands that take each version there through the lifecycle, one
reviewed promotion at a time, once the import branch is merged. The commits are made in a temporary git worktree, so the
user's checkout, index and current branch are never touched, and an import that fails
halfway leaves the branch as it was.

Re-running is idempotent: a version already registered anywhere (any local or
remote-tracking branch) with the same file digests is skipped; one whose files differ is
a conflict, and then nothing is committed for that model: an import never overwrites.
"""

"""Commands that change a registry: init, register, promote, lifecycle, gc, sign, codeowners, workflows, approvals."""

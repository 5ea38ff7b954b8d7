"""Merging GuardFormer model directories into one (`guardstream merge`).

- `weights`: model directories as flat name -> tensor dicts, with an architecture check;
- `methods`: linear averaging, task arithmetic and TIES on those dicts;
- `search`: grid and evolution searches for the merge coefficients, given an objective;
- `validation`: the objective, mean validation F1 over policies, scored with torch;
- `output`: the merged weights written as a normal GuardFormer model directory;
- `cli`: the command line.
"""

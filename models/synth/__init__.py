"""Synthetic guardrail data from a policy definition, with a self-reflection pass.

Given a policy (name, description, allowed and disallowed behaviours, examples), a generator LLM
writes prompts that violate it and prompts that comply with it, each with a rationale; the same
generator then re-judges every prompt against the policy, and rows whose judgement disagrees
with the intended label are dropped or relabelled. The rows are deduplicated (exact and near),
balanced per label, split into train/validation by a hash of the text and written as JSONL in
the format of `models/train/policy_examples.jsonl`. New policies can be generated from seed
policies in the same way.

    generators   the `Generator` protocol: an OpenAI-compatible endpoint or llama.cpp in process
    prompts      the chat messages: generation, reflection and new-policy requests
    parsing      generator output -> record, or a counted failure reason
    dedup        exact and MinHash near-duplicate removal
    selection    balance per label, deterministic train/validation split
    workdir      the append-only work files that make a run resumable
    pipeline     generate -> reflect -> deduplicate -> balance -> split -> write
    new_policies new policy YAML files from seed policies
    cli          `guardstream synth`
"""

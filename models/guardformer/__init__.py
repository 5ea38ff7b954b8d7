"""GuardFormer: a policy-conditioned cross-encoder guard.

The input is the policy's text, then `Query:` and the prompt; the output is the probability that
the prompt violates that policy. One model scores any policy written in plain words, including
ones it was never trained on. `instruction` builds the input (shared by training and serving),
`guard` serves an exported model through ONNX Runtime; the torch model and its training live in
`models.train.guardformer_*`.
"""

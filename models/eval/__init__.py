"""`guardstream eval` (`models.eval.cli`): model directories measured on labeled prompts, scored as
the worker scores them. (The head's metrics while training are `models.train.evaluate`.)"""

"""`guardstream export` (`models.export.cli`): ready-to-serve ONNX files of a trained model
directory, embedder guard (`embedder`) or GuardFormer (`guardformer`), each precision checked
against the torch model (`checks`) before it is written."""

"""The files a target loads, made from a candidate's ONNX model: ``convert`` (one converter
per runtime of ``edgeopt.profiles.runtime_spec.RUNTIMES``)."""

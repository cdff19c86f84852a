"""tfds builders of the offline task suite (array_record, Tensor features, no TF)."""

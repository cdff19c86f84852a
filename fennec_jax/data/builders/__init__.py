"""tfds builders of the offline task suite (array_record, no TF)."""

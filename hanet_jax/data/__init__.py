"""Dataset readers, validation, tf.data pipeline, synthetic phantoms and the leak audit."""

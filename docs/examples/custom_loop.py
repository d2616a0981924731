"""KerasTuner's "Tune model training" guide, its custom training loop: a ``HyperModel`` whose
``fit`` trains with ``tf.GradientTape`` and an optimizer of its own, tunes the batch size and
the learning rate there, and reports a metric of its own to the callbacks it is given
(hpsearch's among them) with ``callback.on_epoch_end(epoch, logs={"my_metric": ...})``. Its
``build`` returns the model uncompiled, as the guide's does: its ``fit`` never calls
``model.fit``. TensorFlow backend (the loop is TensorFlow's); the labels one-hot, as
``make_mnist_npz.py`` writes them (the guide's are integers). The objective is the loop's own:

    hpsearch run --model docs/examples/custom_loop.py:MyHyperModel --data /tmp/mnist-images.npz \\
        --objective my_metric --direction minimize --trials 12 --epochs 2

A trial reports each epoch as the loop ends it, so the pruner stops trials as usual (the loop
trains on to its end, but what follows is not recorded); hpsearch cannot checkpoint it (the
optimizer lives inside ``fit``), so a trial interrupted mid-way starts again.
"""

import keras
import keras_tuner
import tensorflow as tf


class MyHyperModel(keras_tuner.HyperModel):
    def build(self, hp):
        inputs = keras.Input(shape=(28, 28, 1))
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(units=hp.Choice("units", [32, 64, 128]), activation="relu")(x)
        outputs = keras.layers.Dense(units=10)(x)
        return keras.Model(inputs=inputs, outputs=outputs)

    def fit(self, hp, model, x, y, validation_data, callbacks=None, **kwargs):
        batch_size = hp.Int("batch_size", 32, 128, step=32, default=64)
        train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        validation_data = tf.data.Dataset.from_tensor_slices(validation_data).batch(batch_size)
        optimizer = keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"))
        loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
        epoch_loss_metric = keras.metrics.Mean()

        @tf.function
        def run_train_step(images, labels):
            with tf.GradientTape() as tape:
                logits = model(images)
                loss = loss_fn(labels, logits)
                if model.losses:
                    loss += tf.math.add_n(model.losses)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))

        @tf.function
        def run_val_step(images, labels):
            logits = model(images)
            loss = loss_fn(labels, logits)
            epoch_loss_metric.update_state(loss)

        for callback in callbacks:
            callback.set_model(model)

        best_epoch_loss = float("inf")
        for epoch in range(kwargs.get("epochs", 2)):
            for images, labels in train_ds:
                run_train_step(images, labels)
            for images, labels in validation_data:
                run_val_step(images, labels)
            epoch_loss = float(epoch_loss_metric.result().numpy())
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs={"my_metric": epoch_loss})
            epoch_loss_metric.reset_state()
            best_epoch_loss = min(best_epoch_loss, epoch_loss)
        return best_epoch_loss

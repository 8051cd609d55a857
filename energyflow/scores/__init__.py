"""The scores and distances behind ``energyflow.functional``, one module each: ``energy`` (the
energy score and distance, the pairwise power sum), ``kernel``, ``variogram``, ``sliced``;
``_common`` holds what they share."""

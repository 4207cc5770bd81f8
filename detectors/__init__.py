"""Online drift detectors and the alert policy. Imports none of stream/, inference/, feature_store/."""

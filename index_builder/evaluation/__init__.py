"""The offline evaluation: the time split, tuning (ALS, item-item, the blend) on validation, and the chat's
hybrid against its baselines on the held-out weeks (``evaluate``); the ranking metrics (``metrics``); the
stars' RMSE for datasets with explicit ratings (``ratings``)."""

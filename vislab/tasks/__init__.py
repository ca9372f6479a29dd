"""The LightningModules: what a model computes and how it learns, one per task."""

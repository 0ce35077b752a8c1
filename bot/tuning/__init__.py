"""Fine-tuning on the company's own material: training data, model versions, the held-out gate, and a
small escalation classifier. The torch side lives in models/tuning.py; this package decides what the
model learns from and whether the result may serve."""

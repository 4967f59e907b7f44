"""The baseline for bench/predict.sh: what ML engineers write today, a Flask app under
gunicorn serving the same convnet architecture with PyTorch (Debian's python3-torch and
python3-flask). It takes the same request body as mlswarm's /predict and does the same
work: nested lists to a tensor, normalisation, forward, softmax, argmax, class names."""

import os

import torch
import torch.nn as nn
from flask import Flask, jsonify, request

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530

model = nn.Sequential(
    nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
model.eval()

app = Flask(__name__)


@app.post("/predict")
def predict():
    body = request.get_json()
    x = torch.tensor(body["examples"], dtype=torch.float32).reshape(-1, 1, 28, 28)
    with torch.no_grad():
        p = torch.softmax(model((x - MEAN) / STD), dim=1)
    idx = p.argmax(dim=1).tolist()
    return jsonify({"model_id": body["model_id"], "class_idxs": idx, "class_tags": [CLASSES[i] for i in idx],
                    "probabilities": p.tolist()})

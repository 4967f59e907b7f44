#pragma once

// The sweep of the design, for the sweep tests: five fields searched with ASHA over 1, 3 and 9
// epochs on Fashion-MNIST.

#include <nlohmann/json.hpp>

namespace mlswarm::testing {

inline nlohmann::json example_sweep_body() {
  return nlohmann::json::parse(R"({"sweep_id": "lr-search", "trials": 27, "seed": 1,
      "base": {"model_type": "convnet", "dataset": "fashion-mnist", "train_opts": {"batch_size": 128}},
      "space": {"lr": {"type": "log_uniform", "min": 0.001, "max": 0.3},
                "label_smoothing": {"type": "choice", "values": [0, 0.05, 0.1]},
                "batch_size": {"type": "int", "min": 32, "max": 256},
                "weight_decay": {"type": "uniform", "min": 0, "max": 0.001},
                "model_type": {"type": "choice", "values": ["convnet", "mlp"]}},
      "scheduler": {"type": "asha", "r": 1, "eta": 3, "R": 9}})");
}

}  // namespace mlswarm::testing

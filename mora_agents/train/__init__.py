"""Fine-tuning the agents on accepted samples: the paper's self-modulated multi-agent training (Algorithm 1).

    from mora_agents.train import TrainConfig, train, write_sample
    write_sample("data", clip=..., first_frame=..., task="text_to_video", prompt=..., enhanced_prompt=..., seed=1)
    result = train("data", "adapters", TrainConfig(preset="tiny", steps=4))   # the chain objective by default
    run_training("adapters2", "data", TrainConfig(preset="tiny"), processes=2)  # the same on two processes
"""

from mora_agents.train.dataset import Sample, load_hf_dataset, read_dataset, write_sample
from mora_agents.train.launch import run_training
from mora_agents.train.trainer import TrainConfig, TrainResult, resume, train, validation_loss

__all__ = ["Sample", "TrainConfig", "TrainResult", "load_hf_dataset", "read_dataset", "resume", "run_training", "train",
           "validation_loss", "write_sample"]

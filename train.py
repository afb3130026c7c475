"""dapo-lab entry point: `python train.py clip=higher loss=token sampling=dynamic overlong=soft`."""

import hydra
from omegaconf import DictConfig

from dapo_lab.run import main


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def train(cfg: DictConfig) -> float:
    return main(cfg)


if __name__ == "__main__":
    train()
